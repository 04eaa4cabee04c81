"""The one settings object: environment variables prefixed ROI_RELAY_ and matching CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROI_RELAY_", extra="ignore")

    host: str = "0.0.0.0"
    rtmp_port: int = Field(1935, ge=0, le=65535)
    http_port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Path("./data")
    database_url: str = ""
    push_key: str = ""
    push_backup_key: str = ""
    # Signed push URLs expiring further ahead than this are refused (txTime is hex).
    push_max_ttl: float = Field(7 * 24 * 3600.0, gt=0)
    # Whether a new publish of a live name replaces its publisher: "stale" only one silent
    # for publisher_stale_seconds (a dropped network), "always", or "never".
    publisher_takeover: Literal["stale", "always", "never"] = "stale"
    publisher_stale_seconds: float = Field(3.0, gt=0)
    # RTMP connection bounds: seconds to finish the handshake and connect; seconds a connected
    # client may go without publishing or playing; seconds a publisher may stay silent.
    rtmp_handshake_timeout: float = Field(10.0, gt=0)
    rtmp_connect_timeout: float = Field(15.0, gt=0)
    rtmp_idle_timeout: float = Field(30.0, gt=0)
    # Bytes that partly received RTMP messages may hold, per connection and server-wide.
    rtmp_max_pending_bytes: int = Field(12 * 1024 * 1024, ge=1024 * 1024)
    rtmp_max_pending_bytes_total: int = Field(256 * 1024 * 1024, ge=1024 * 1024)
    api_token: str = ""
    template_activation_delay: float = Field(300.0, ge=0)
    encoder: str = "auto"
    # ROI decoding: auto (NVDEC when it opens), cpu, cuda (NVDEC asked for; CPU with the reason).
    decoder: Literal["auto", "cpu", "cuda"] = "auto"
    # Where libcuda.so.1 and libnvidia-encode.so.1 are, when not on the loader's path (unusual
    # installs; the tests point it at a fake driver). Empty: the dynamic loader finds them.
    nvenc_library_dir: Path | None = None
    # The operator's recognition models (manifests), beside the built-in ones.
    models_dir: Path | None = None
    log_level: str = "info"
    # Players whose queue holds more than this many seconds of media skip to the next keyframe.
    player_queue_seconds: float = Field(4.0, gt=0)
    # RTMP and HTTP-FLV players get the packets of this many ms in one write (0: those of one
    # publisher read). Fewer writes per player cost less CPU, at up to that much latency:
    # 20 ms takes about a third off CPU per player, unseen by players that buffer a second.
    write_merge_ms: float = Field(20.0, ge=0, le=1000)
    hls_segment_seconds: float = Field(1.0, gt=0)
    hls_window: int = Field(6, ge=2)
    # RTMPS: a second RTMP listener behind TLS (certificate chain and key as PEM files).
    rtmps_port: int | None = Field(None, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Recording: streams whose "app/stream" matches one of these globs (comma separated).
    record: str = ""
    record_dir: Path | None = None  # default: <data_dir>/recordings
    record_format: Literal["mp4", "flv"] = "mp4"
    record_segment_seconds: float = Field(600.0, gt=0)
    # Retention per stream, oldest segments first (0: no limit).
    record_max_hours: float = Field(0.0, ge=0)
    record_max_gb: float = Field(0.0, ge=0)
    # Recording stops (the live stream goes on) when the disk has less free space than this.
    record_min_free_mb: float = Field(256.0, ge=0)
    # Forwarding: "pattern=url[,url]" rules separated by spaces; {app} and {stream} in a URL
    # are replaced by the stream's names.
    forward: str = ""
    forward_backoff_initial: float = Field(1.0, gt=0)
    forward_backoff_max: float = Field(30.0, gt=0)
    # CA bundle (PEM) that rtmps:// destinations are verified against (default: the system's).
    forward_tls_ca: Path | None = None

    # What one HTTP client can make the server hold (app/api/limits.py).
    http_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    whep_max_offer_bytes: int = Field(64 * 1024, ge=1024)
    http_header_timeout: float = Field(10.0, gt=0)
    http_max_header_bytes: int = Field(64 * 1024, ge=1024)
    # WebRTC seats: an answered offer must connect within whep_connect_timeout seconds.
    whep_max_sessions: int = Field(64, ge=1)
    whep_connect_timeout: float = Field(10.0, gt=0)
    whep_max_pending_per_client: int = Field(4, ge=1)
    whep_max_sessions_per_client: int = Field(16, ge=1)
    # The largest picture the ROI stage decodes (H.264 level 5.1: 4096x2304); larger: plain.
    roi_max_picture_pixels: int = Field(36864 * 256, ge=64 * 64)
    roi_max_picture_side: int = Field(8192, ge=64)
    # glibc malloc arenas (0: glibc's default, 8 per core); MALLOC_ARENA_MAX, if set, wins.
    malloc_arena_max: int = Field(2, ge=0)
    # Blocks from this size up come from mmap (0: glibc's sliding threshold); the env wins.
    malloc_mmap_threshold: int = Field(128 * 1024, ge=0, le=32 * 1024 * 1024)
    # The event loop: uvloop (libuv, from uvicorn[standard]) when it imports, else asyncio's.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    # Operator integration (app/hooks): event callbacks, the publish/play hook, signed play.
    callback_url: str = ""
    # Per kind of event; empty = callback_url, "off" = not sent.
    callback_url_publish: str = ""
    callback_url_play: str = ""
    callback_url_roi: str = ""
    callback_url_record: str = ""
    callback_key: str = ""
    callback_retries: int = Field(12, ge=0, le=1000)
    callback_retry_interval: float = Field(60.0, gt=0)
    callback_timeout: float = Field(5.0, gt=0)
    callback_queue_size: int = Field(1000, ge=1)
    callback_sign_ttl: float = Field(600.0, gt=0)
    auth_hook_url: str = ""
    auth_hook_timeout: float = Field(3.0, gt=0)
    auth_hook_fail_open: bool = False
    play_key: str = ""
    play_backup_key: str = ""
    # An HLS viewer session ends after this long without a playlist or segment fetch.
    hls_session_timeout: float = Field(60.0, gt=0)
    metrics_token: str = ""

    # Clustering (app/cluster): nodes sharing the database share one stream directory.
    cluster: bool = False
    node_id: str = ""  # unique per process; hostname-pid when empty
    node_url: str = ""  # this node's HTTP address for other nodes; from host/port when empty
    node_rtmp_url: str = ""  # this node's RTMP address for pulls; from host/port when empty
    # Also listen on this host at free ports and advertise those (the --workers children).
    internal_host: str = ""
    reuse_port: bool = False  # SO_REUSEPORT on the public ports (the --workers children)
    heartbeat_seconds: float = Field(1.0, gt=0)
    node_expiry_seconds: float = Field(5.0, gt=0)
    edge_mode: Literal["pull", "redirect"] = "pull"
    edge_grace_seconds: float = Field(10.0, ge=0)
    # Processes behind the same public ports: a number or "auto" (the cores this process may
    # use; one when a public port is 0, since each worker would get its own free port).
    workers: str = "auto"

    @field_validator(
        "rtmps_port", "tls_cert", "tls_key", "record_dir", "forward_tls_ca", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _rtmps_needs_certificate(self) -> Settings:
        if self.rtmps_port is not None and (self.tls_cert is None or self.tls_key is None):
            raise ValueError("rtmps_port needs tls_cert and tls_key (PEM files)")
        return self

    @property
    def resolved_record_dir(self) -> Path:
        return self.record_dir if self.record_dir is not None else self.data_dir / "recordings"

    @field_validator("nvenc_library_dir", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'roi-relay.db').resolve()}"
