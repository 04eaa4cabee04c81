"""Recording: fragmented MP4 (or FLV) segments of what players get, with ROI sidecars."""
