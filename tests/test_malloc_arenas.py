"""The CLI caps glibc's malloc arenas before any worker thread starts and fixes its mmap
threshold (issue 17, 8)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Eight threads allocating at once, then the number of heaps (arenas) glibc reports.
_PROBE = textwrap.dedent(
    """
    import ctypes, sys, threading
    from app.cli import bound_malloc_arenas
    print(bound_malloc_arenas(int(sys.argv[1])))
    barrier = threading.Barrier(8)
    def work():
        held = [bytearray(3000) for _ in range(500)]
        barrier.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL("libc.so.6")
    libc.open_memstream.restype = ctypes.c_void_p
    buf, size = ctypes.c_char_p(), ctypes.c_size_t()
    fp = ctypes.c_void_p(libc.open_memstream(ctypes.byref(buf), ctypes.byref(size)))
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(buf.value.decode().count("<heap nr="))
    """
)


def _probe(script: str, value: int, unset: str) -> tuple[str, int]:
    """Runs ``script`` with ``value`` in a fresh interpreter without the glibc variable
    ``unset``; answers its two printed words: applied, and the count it measured."""
    env = {k: v for k, v in os.environ.items() if k != unset}
    out = subprocess.run(
        [sys.executable, "-c", script, str(value)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    ).stdout.split()
    return out[0], int(out[1])


def _heaps(arenas: int) -> tuple[str, int]:
    return _probe(_PROBE, arenas, "MALLOC_ARENA_MAX")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_info")
def test_malloc_arenas_are_capped() -> None:
    applied, heaps = _heaps(2)
    assert applied == "True"
    assert heaps <= 2
    # Without the cap the same threads get arenas of their own: the probe can tell.
    applied, heaps = _heaps(0)
    assert applied == "False"
    assert heaps > 2


def test_the_environment_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli import bound_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert bound_malloc_arenas(2) is False


# A 1 MiB block freed raises glibc's sliding mmap threshold to 1 MiB: a 512 KiB block then
# comes from the heap. With the threshold fixed it is still mmapped (mallinfo2's hblks).
_MMAP_PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from app.cli import fix_mmap_threshold
    print(fix_mmap_threshold(int(sys.argv[1])))
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        ).split()]
    libc.mallinfo2.restype = MallInfo2
    libc.free(libc.malloc(1 << 20))
    before = libc.mallinfo2().hblks
    block = libc.malloc(512 << 10)
    print(libc.mallinfo2().hblks - before)
    libc.free(block)
    """
)


def _mmapped_blocks(threshold: int) -> tuple[str, int]:
    return _probe(_MMAP_PROBE, threshold, "MALLOC_MMAP_THRESHOLD_")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallinfo2")
def test_large_blocks_stay_mmapped_with_the_threshold_fixed() -> None:
    assert _mmapped_blocks(128 * 1024) == ("True", 1)
    # glibc's own sliding threshold: the same block now comes from the heap.
    assert _mmapped_blocks(0) == ("False", 0)


def test_the_mmap_environment_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli import fix_mmap_threshold

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert fix_mmap_threshold(131072) is False
