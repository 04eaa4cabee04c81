"""FastAPI routers: templates, streams, playback."""
