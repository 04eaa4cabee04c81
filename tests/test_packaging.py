"""The deployment files stay true: compose accepts its file, and the Dockerfile installs and
starts the relay with the same steps as the README's first command."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S)


def test_compose_file_is_accepted() -> None:
    compose = shutil.which("docker-compose")
    command = [compose, "config", "-q"] if compose else ["docker", "compose", "config", "-q"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_dockerfile_installs_and_runs_like_the_readme() -> None:
    run_command = readme_commands()[0]
    assert "pip install ." in run_command and "roi-relay serve" in run_command
    dockerfile = (ROOT / "Dockerfile").read_text()
    # The package itself, perhaps with extras (the image adds PostgreSQL's driver for clusters).
    assert re.search(r"^RUN .*pip install [^\n]*\"?\.(\[[a-z,]+\])?\"?$", dockerfile, re.M)
    assert 'CMD ["roi-relay", "serve"]' in dockerfile
    for needed in ("pyproject.toml", "app", "models"):
        assert re.search(rf"^COPY .*\b{needed}\b", dockerfile, re.M), needed


def test_ci_runs_the_readme_test_command() -> None:
    test_command = readme_commands()[1]
    assert test_command in (ROOT / ".ci" / "run").read_text()
