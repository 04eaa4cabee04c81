"""Coverage-guided fuzzing of the parsers and the RTMP session (see fuzz/README.md)."""
