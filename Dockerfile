# Same steps as the README: install the package, run `roi-relay serve` with embedded defaults.
FROM python:3.11-slim-bookworm
WORKDIR /srv/roi-relay
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
RUN python3 -m venv /srv/venv && /srv/venv/bin/pip install --no-cache-dir ".[postgres]"
# MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_: decoder threads fragment memory across arenas
# otherwise, and large blocks the heaps (README), from the first allocation on.
# WORKERS=auto: one relay process per core the container may use (README "All cores").
ENV PATH=/srv/venv/bin:$PATH \
    ROI_RELAY_DATA_DIR=/data \
    ROI_RELAY_WORKERS=auto \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=131072
VOLUME ["/data"]
EXPOSE 1935 8080
CMD ["roi-relay", "serve"]
