"""Forwarding: pushing a stream's output on to other RTMP/RTMPS servers (platforms, relays)."""
