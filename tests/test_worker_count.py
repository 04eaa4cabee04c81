"""``--workers auto``: the cores this process may use, fewer under a container's CPU quota
(cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), read from cgroup files laid out here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.cli import available_cores, worker_count

AFFINITY = len(os.sched_getaffinity(0))


def _v2(root: Path, cpu_max: str) -> Path:
    root.mkdir(exist_ok=True)
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def _v1(root: Path, quota: int, period: int) -> Path:
    (root / "cpu").mkdir(parents=True, exist_ok=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


def test_no_cgroup_quota_means_every_core_of_the_affinity(tmp_path: Path) -> None:
    assert available_cores(tmp_path) == AFFINITY
    assert available_cores(_v2(tmp_path / "v2", "max 100000")) == AFFINITY
    assert available_cores(_v1(tmp_path / "v1", -1, 100000)) == AFFINITY


@pytest.mark.parametrize(("quota", "expected"), [(50000, 1), (100000, 1), (150000, 2)])
def test_a_quota_caps_the_count_rounding_up(tmp_path: Path, quota: int, expected: int) -> None:
    assert available_cores(_v2(tmp_path / "v2", f"{quota} 100000")) == min(AFFINITY, expected)
    assert available_cores(_v1(tmp_path / "v1", quota, 100000)) == min(AFFINITY, expected)


def test_a_quota_above_the_affinity_does_not_add_cores(tmp_path: Path) -> None:
    assert available_cores(_v2(tmp_path, f"{64 * 100000} 100000")) == AFFINITY


def test_worker_count_reads_numbers_and_auto() -> None:
    assert worker_count("3") == 3
    assert worker_count(" AUTO ") == available_cores()
    # A free port (0) cannot be shared: auto is then one process, a number is still obeyed.
    assert worker_count("auto", free_ports=True) == 1
    assert worker_count("2", free_ports=True) == 2
    with pytest.raises(SystemExit, match="must be a number or auto"):
        worker_count("many")
    with pytest.raises(SystemExit, match="at least 1"):
        worker_count("0")
