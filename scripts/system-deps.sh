#!/usr/bin/env bash
# System packages the test suite drives as real clients: FFmpeg CLI, GStreamer rtmp2, rtmpdump,
# nginx-rtmp (reference server for bench/relay.py), Chromium (browser tests), PostgreSQL,
# OBS Studio headless under Xvfb (tests/test_obs_push.py),
# gcc + libffmpeg-nvenc-dev (the NVENC header: struct layout test and the fake NVENC driver).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  ffmpeg rtmpdump \
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
  nginx libnginx-mod-rtmp \
  chromium chromium-driver fonts-noto-cjk \
  postgresql docker-compose \
  obs-studio xvfb xauth \
  gcc libc6-dev libffmpeg-nvenc-dev >/dev/null
