"""Support code shared by the test folders and bench/: real clients, a real relay, clips.

Nothing here is a test; every module drives real parts (PyAV/FFmpeg, sockets, uvicorn,
Chromium), the way the tests and benches that import it do.
"""
