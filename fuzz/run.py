"""Runs the fuzz targets with atheris (libFuzzer) and prints executions and unique failures.

    python -m fuzz.run                       # every target, 20 s each
    python -m fuzz.run session nal --runs 1000000
    python -m fuzz.run --seconds 3           # the smoke test's budget

Each target runs in its own process, seeded from ``fuzz/corpus/<target>/`` (kept in the
repository); what libFuzzer learns goes to ``fuzz/work/corpus/<target>/`` (not committed).
An input raising something the target does not expect is saved once per kind of failure
(exception type and the innermost ``app`` frame) under ``fuzz/work/failures/<target>/``,
and fuzzing goes on. Keep a failing input as a regression: copy it to
``fuzz/regressions/<target>/`` (``tests/fuzz/test_regressions.py`` replays those).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus"
WORK = Path(os.environ.get("FUZZ_WORK", ROOT / "fuzz" / "work"))
# commands: 256 commands a sequence, deep enough for its five message streams (longer inputs
# run at under 100 executions a second instrumented).
MAX_LEN = {"session": 65536, "chunk": 65536, "commands": 1024}


def failure_key(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/app/" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__} at {where}"


def worker(name: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["app"]):
        from fuzz.targets import TARGETS, run_one
    target = TARGETS[name]
    failures = WORK / "failures" / name
    failures.mkdir(parents=True, exist_ok=True)
    seen = {p.read_text().splitlines()[0] for p in failures.glob("*.txt")}

    def one_input(data: bytes) -> None:
        exc = run_one(target, data)
        if exc is None:
            return
        key = failure_key(exc)
        if key in seen:
            return
        seen.add(key)
        digest = hashlib.sha1(data).hexdigest()[:16]
        (failures / digest).write_bytes(data)
        text = "".join(traceback.format_exception(exc))
        (failures / f"{digest}.txt").write_text(f"{key}\n{text}")
        print(f"FAILURE {name}: {key} (input {failures / digest})", flush=True)

    work = WORK / "corpus" / name
    work.mkdir(parents=True, exist_ok=True)
    seeds = CORPUS / name
    argv = [sys.argv[0], *libfuzzer_args, str(work)]
    if seeds.is_dir():
        argv.append(str(seeds))
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def run_target(
    name: str, runs: int | None, seconds: float | None, max_len: int | None = None
) -> tuple[int, int, float]:
    """Fuzzes one target in a child process; returns (executions, unique failures, s)."""
    args = [
        f"-max_len={max_len or MAX_LEN.get(name, 8192)}",
        "-rss_limit_mb=4096",
        "-print_final_stats=1",
        "-timeout=20",
    ]
    if runs is not None:
        args.append(f"-runs={runs}")
    if seconds is not None:
        args.append(f"-max_total_time={max(1, int(seconds))}")
    started = time.monotonic()
    log_path = WORK / "logs" / f"{name}.log"  # libFuzzer's progress, readable while it runs
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "fuzz.run", "--worker", name],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "FUZZ_LIBFUZZER_ARGS": " ".join(args)},
        )
    elapsed = time.monotonic() - started
    output = log_path.read_text(errors="replace")
    for line in output.splitlines():
        if line.startswith("FAILURE"):
            print(line, flush=True)
    executed = re.findall(r"stat::number_of_executed_units:\s*(\d+)", output)
    done = re.findall(r"Done (\d+) runs", output)
    count = int(executed[-1]) if executed else int(done[-1]) if done else 0
    if proc.returncode != 0 and not count:
        print(output[-3000:], file=sys.stderr)
    failures = WORK / "failures" / name
    unique = len(list(failures.glob("*.txt"))) if failures.is_dir() else 0
    return count, unique, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="default: all targets")
    parser.add_argument("--runs", type=int, default=None, help="executions per target")
    parser.add_argument("--seconds", type=float, default=None, help="time per target")
    parser.add_argument("--max-len", type=int, default=None, help="longest input, bytes")
    parser.add_argument("--work", default=None, help="working folder (default fuzz/work)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work:
        global WORK
        WORK = Path(args.work).resolve()
        os.environ["FUZZ_WORK"] = str(WORK)
    if args.worker:
        worker(args.worker, os.environ.get("FUZZ_LIBFUZZER_ARGS", "").split())
        return 0
    from fuzz.targets import TARGETS  # not before the worker: it must import app instrumented

    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; known: {list(TARGETS)}")
    seconds = args.seconds if args.seconds is not None or args.runs else 20.0
    total_failures = 0
    print(f"{'target':<10} {'executions':>12} {'exec/s':>8} {'unique failures':>16}")
    for name in names:
        count, unique, elapsed = run_target(name, args.runs, seconds, args.max_len)
        total_failures += unique
        rate = count / elapsed if elapsed else 0.0
        print(f"{name:<10} {count:>12} {rate:>8.0f} {unique:>16}", flush=True)
    return 1 if total_failures else 0


if __name__ == "__main__":
    sys.exit(main())
