"""The host allocator setting of the memgpt-jax entry point (memgpt_jax/hostmem.py): a
64 MiB buffer comes from glibc's heap when tuned, from a fresh mmap with the defaults."""

import ctypes.util
import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes
from memgpt_jax.hostmem import allocator_setting, tune_host_allocator
tune_host_allocator()
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
before = libc.mallinfo2().hblks
buf = libc.malloc(64 << 20)
print(allocator_setting(), libc.mallinfo2().hblks - before)
libc.free(ctypes.c_void_p(buf))
"""


def probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env={**os.environ, **env},
                         check=True)
    setting, mmapped = out.stdout.split()
    return setting, int(mmapped)


@pytest.mark.skipif(not sys.platform.startswith("linux") or "libc.so" not in (ctypes.util.find_library("c") or ""),
                    reason="glibc only")
def test_tuned_allocator_serves_big_buffers_from_the_heap_and_can_be_turned_off():
    assert probe() == ("tuned", 0)
    assert probe(MEMGPT_ALLOCATOR="default") == ("default", 1)


def test_the_entry_point_tunes_before_parsing():
    code = ("import contextlib, io\nimport memgpt_jax.cli as cli, memgpt_jax.hostmem as h\n"
            "print(h.allocator_setting())\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    cli.main([])\n"
            "print(h.allocator_setting())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "unset"
    assert out.stdout.split()[-1] in ("tuned", "default")  # applied ("default" where it is not glibc)
