from __future__ import annotations

from pathlib import Path

import pytest

from tests.roi.nvenc.fake_driver import build_fake_driver


@pytest.fixture(scope="session")
def fake_driver_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the fake libcuda.so.1 and libnvidia-encode.so.1."""
    return build_fake_driver(tmp_path_factory.mktemp("fake-nvidia-driver"))


@pytest.fixture
def fake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The call log of this test (the fake reads its environment at each call)."""
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_NVENC_LOG", str(log))
    for name in (
        "FAKE_NVENC_OPEN_STATUS",
        "FAKE_CUDA_INIT_STATUS",
        "FAKE_NVENC_MAX_VERSION",
        "FAKE_NVENC_HOLD",
    ):
        monkeypatch.delenv(name, raising=False)
    return log
