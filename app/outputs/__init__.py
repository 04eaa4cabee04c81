"""Outputs: what players read from a stream's output track."""
