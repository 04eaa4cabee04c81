"""Composition root: builds the hub, the stores and the servers, and wires them together."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp

from app import __version__
from app.api.docs import mount_docs
from app.api.errors import SafeJSONResponse, install_error_handlers
from app.api.forwards import forwards_router
from app.api.hls import hls_router
from app.api.hls_access import HlsViewers
from app.api.http_protocol import http_protocol
from app.api.limits import BodyLimit, body_limits
from app.api.player import player_router
from app.api.recordings import recordings_router
from app.api.roi_feed import roi_feed_router
from app.api.security import bearer_auth
from app.api.streams import streams_router
from app.api.templates import document_models, models_router, mount_console, templates_router
from app.api.whep import whep_router
from app.cluster.api import cluster_router
from app.cluster.wiring import Cluster, listening_socket
from app.config import Settings
from app.hooks.wiring import Hooks
from app.hub import Hub, Stream
from app.metrics import relay_registry
from app.outputs.flv import HttpFlvPlayback
from app.outputs.forward.manager import ForwardManager
from app.outputs.forward.metrics import ForwardCollector
from app.outputs.record.manager import RecordingManager
from app.outputs.record.metrics import RecordingCollector
from app.outputs.webrtc import WhepService
from app.roi.config import PictureLimit
from app.roi.controller import RoiController
from app.roi.detect import RecognitionModel, load_model
from app.roi.registry import ModelCatalog
from app.rtmp.client import RtmpPublishSession
from app.rtmp.metrics import RtmpCollector
from app.rtmp.server import RtmpServer
from app.rtmp.tls import server_context
from app.templates.store import TemplateChange, TemplateStore

log = logging.getLogger("app.server")


class Relay:
    """The whole relay in one process: RTMP and HTTP servers on one event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.hub = Hub(
            player_queue_seconds=settings.player_queue_seconds,
            takeover=settings.publisher_takeover,
            stale_seconds=settings.publisher_stale_seconds,
            write_merge_ms=settings.write_merge_ms,
        )
        self.hooks = Hooks(settings, self.hub)
        self.templates = TemplateStore(
            settings.resolved_database_url,
            activation_delay=settings.template_activation_delay,
        )
        self.models = ModelCatalog(settings.models_dir)
        self.cluster = Cluster(self.hub, settings) if settings.cluster else None
        self.roi = RoiController(
            self.hub,
            self.templates.in_force,
            self.templates.pending,
            encoder_name=settings.encoder,
            load_model=self._load_stream_model,
            decoder_mode=settings.decoder,
            nvenc_library_dir=settings.nvenc_library_dir,
            picture_limit=PictureLimit(
                settings.roi_max_picture_pixels, settings.roi_max_picture_side
            ),
            exempt=self.cluster.is_pulled if self.cluster else None,
        )
        self.registry = relay_registry(self.hub, self.roi)
        self.registry.register(self.hooks.collector)
        self.templates.subscribe(self._on_template_change)
        if self.hooks.delivery.wants("roi"):
            self.roi.on_roi_change.append(self.hooks.events.roi_changed)
        self.whep = WhepService(
            self.hub,
            max_sessions=settings.whep_max_sessions,
            connect_timeout=settings.whep_connect_timeout,
            max_pending_per_client=settings.whep_max_pending_per_client,
            max_sessions_per_client=settings.whep_max_sessions_per_client,
        )
        self.recordings = RecordingManager(self.hub, settings)
        if self.hooks.delivery.wants("record"):
            self.recordings.on_event = self.hooks.events.recording_event
        self.registry.register(RecordingCollector(self.recordings))
        self.forwards = ForwardManager(self.hub, settings, RtmpPublishSession)
        self.registry.register(ForwardCollector(self.forwards))
        # HLS viewers get sessions when a play needs admitting or reporting (hls_access.py).
        self.hls_viewers = (
            HlsViewers(self.hooks.admission, settings.hls_session_timeout)
            if self.hooks.play_protected or self.hooks.delivery.wants("play")
            else None
        )
        self.http_app = self._build_http_app()
        # HTTP-FLV is answered in front of FastAPI (app/outputs/flv.py says why); body limits
        # in front of everything.
        self.asgi_app: ASGIApp = BodyLimit(
            HttpFlvPlayback(self.hub, self.http_app, admit=self.hooks.admission),
            body_limits(settings.http_max_body_bytes, settings.whep_max_offer_bytes),
        )
        self.rtmp = RtmpServer(self.hub, settings, admit=self.hooks.admission)
        self.registry.register(RtmpCollector(self.rtmp))
        if self.cluster is not None:
            self.asgi_app = self.cluster.wire(self.asgi_app, self.rtmp, self.registry)
        self._uvicorn: uvicorn.Server | None = None
        self._uvicorn_task: asyncio.Task[None] | None = None
        self.rtmp_port = settings.rtmp_port
        self.rtmps_port = settings.rtmps_port
        self.http_port = settings.http_port

    def _load_stream_model(self, name: str) -> RecognitionModel:
        # One intra-op thread per stream leaves a core to the encoder.
        return load_model(name, threads=1, catalog=self.models)

    def _output_sections(self, stream: Stream) -> dict[str, Any]:
        return {
            "recording": self.recordings.stream_section(stream),
            "forwards": self.forwards.status(stream.key),
        }

    def _build_http_app(self) -> FastAPI:
        app = FastAPI(
            title="roi-relay",
            version=__version__,
            description="Live streaming relay with ROI recognition and ROI encoding.",
            docs_url=None,  # mount_docs serves them without a CDN
            redoc_url=None,
            default_response_class=SafeJSONResponse,
        )
        mount_docs(app)
        install_error_handlers(app)
        guard = [bearer_auth(self.settings.api_token)]
        app.include_router(templates_router(self.templates, self.models, guard))
        app.include_router(models_router(self.models, guard))
        document_models(app, self.models)
        app.include_router(streams_router(self.hub, self.roi, guard, self._output_sections))
        app.include_router(recordings_router(self.recordings, guard, self.hooks.admission.gate))
        app.include_router(forwards_router(self.forwards, guard))
        if self.cluster is not None:
            app.include_router(cluster_router(self.cluster, guard))
        mount_console(app)

        @app.get("/healthz", tags=["ops"], summary="Liveness")
        async def healthz() -> dict[str, Any]:
            return {
                "status": "ok",
                "streams": len(self.hub.streams()),
                "version": __version__,
                # What the console needs to show the push URL to copy into OBS.
                "rtmp_port": self.rtmp_port,
                "push_auth": bool(self.settings.push_key or self.settings.push_backup_key),
            }

        # /metrics names streams but no clients: its own token (ROI_RELAY_METRICS_TOKEN), so
        # a scraper needs no API token; empty = open like /healthz.
        @app.get(
            "/metrics",
            tags=["ops"],
            response_class=PlainTextResponse,
            summary="Prometheus",
            dependencies=[bearer_auth(self.settings.metrics_token)],
        )
        async def metrics() -> Response:  # async: on the loop, which owns stream state
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        # Playback last: its /{app}/{stream}.xxx patterns must not shadow the API routes.
        admit = self.hooks.admission
        app.include_router(roi_feed_router(self.hub, admit))
        app.include_router(
            hls_router(
                self.hub,
                segment_seconds=self.settings.hls_segment_seconds,
                window=self.settings.hls_window,
                viewers=self.hls_viewers,
            )
        )
        app.include_router(whep_router(self.hub, self.whep, admit))
        app.include_router(player_router(self.hub))
        return app

    def _on_template_change(self, change: TemplateChange) -> None:
        log.info("template %s %s", change.name, change.kind)
        self.roi.templates_changed()

    def _warn_open_settings(self) -> None:
        if not (self.settings.push_key or self.settings.push_backup_key):
            log.warning("ROI_RELAY_PUSH_KEY is empty: anyone can publish (push auth is off)")
        if not self.settings.api_token:
            log.warning("ROI_RELAY_API_TOKEN is empty: the REST API is open to anyone")

    async def start(self) -> None:
        self._warn_open_settings()
        await self.templates.start_watching()
        reuse_port = self.settings.reuse_port
        await self.rtmp.start(self.settings.host, self.settings.rtmp_port, reuse_port=reuse_port)
        self.rtmp_port = self.rtmp.port
        if self.settings.rtmps_port is not None:
            assert self.settings.tls_cert is not None and self.settings.tls_key is not None
            context = server_context(self.settings.tls_cert, self.settings.tls_key)
            self.rtmps_port = await self.rtmp.start(
                self.settings.host, self.settings.rtmps_port, tls=context
            )

        sock = listening_socket(self.settings.host, self.settings.http_port, reuse_port)
        self.http_port = sock.getsockname()[1]
        sockets = [sock]
        if self.cluster is not None:
            sockets += await self.cluster.start(self.rtmp_port, self.http_port)
        config = uvicorn.Config(
            self.asgi_app,
            log_level=self.settings.log_level,
            lifespan="off",
            ws="websockets-sansio",
            http=http_protocol(
                self.settings.http_header_timeout, self.settings.http_max_header_bytes
            ),
            timeout_graceful_shutdown=2,
        )
        self._uvicorn = uvicorn.Server(config)
        self._uvicorn_task = asyncio.create_task(self._uvicorn.serve(sockets=sockets))
        while not self._uvicorn.started:
            if self._uvicorn_task.done():
                self._uvicorn_task.result()
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.02)
        log.info(
            "roi-relay %s: RTMP on %s:%d, HTTP on %s:%d",
            __version__,
            self.settings.host,
            self.rtmp_port,
            self.settings.host,
            self.http_port,
        )

    async def serve_forever(self) -> None:
        await self.start()
        try:
            assert self._uvicorn_task is not None
            await self._uvicorn_task
        finally:
            await self.stop()

    async def stop(self) -> None:
        await self.rtmp.close()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.roi.close()
        for stream in self.hub.streams():
            stream.close()
        await self.hub.wait_closed()
        await self.recordings.close()
        await self.forwards.close()
        await self.whep.close()
        await self.templates.stop_watching()
        if self.hls_viewers is not None:
            await self.hls_viewers.close()
        await self.hooks.close()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._uvicorn_task is not None:
            try:
                await asyncio.wait_for(self._uvicorn_task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                pass
        self.templates.close()
