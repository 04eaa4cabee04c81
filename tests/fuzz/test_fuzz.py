"""The fuzz suite in the test run: every input that ever failed stays fixed, the seed corpus
runs clean, and each target fuzzes briefly without an unexpected exception."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.targets import TARGETS, run_one

ROOT = Path(__file__).resolve().parents[2]
REGRESSIONS = sorted((ROOT / "fuzz" / "regressions").glob("*/*"))
SEEDS = sorted((ROOT / "fuzz" / "corpus").glob("*/*"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_regression_input_is_handled(path: Path) -> None:
    exc = run_one(TARGETS[path.parent.name], path.read_bytes())
    assert exc is None, f"{path}: {exc!r}"


def test_every_target_has_seeds_from_real_clients() -> None:
    seeded = {p.parent.name for p in SEEDS}
    assert seeded >= set(TARGETS) - {"commands"}  # commands are built from the fuzz input
    assert len(REGRESSIONS) >= 5


def test_seed_corpus_runs_clean() -> None:
    failures = [(p, exc) for p in SEEDS if (exc := run_one(TARGETS[p.parent.name], p.read_bytes()))]
    assert not failures


@pytest.mark.slow
def test_each_target_fuzzes_briefly_without_failures(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.run", "--seconds", "3", "--work", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    rows = {
        line.split()[0]: line.split()[1:]
        for line in proc.stdout.splitlines()[1:]
        if line.split() and line.split()[0] in TARGETS
    }
    assert set(rows) == set(TARGETS), proc.stdout + proc.stderr
    for name, (executions, _rate, failures) in rows.items():
        assert int(executions) > 1000, (name, executions)
        assert failures == "0", (name, proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
