"""Several relay processes (one machine or many) sharing one stream directory."""
