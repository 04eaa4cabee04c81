"""roi-relay: a live streaming relay that spends the bits where viewers look."""

__version__ = "0.1.0"
