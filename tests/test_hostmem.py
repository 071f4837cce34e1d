"""The host allocator setting of the memgpt-jax entry point (memgpt_jax/hostmem.py): a
1.5 GiB buffer (a training step's temporaries are one such block) comes from glibc's heap
and stays there once freed when tuned; it is a fresh mmap with the defaults."""

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
size = 3 << 29  # 1.5 GiB: above the 1 GiB the allocator kept before (only touched pages cost memory)
before = libc.mallinfo2().hblks
buf = libc.malloc(size)
mmapped = libc.mallinfo2().hblks - before
libc.free(ctypes.c_void_p(buf))
print(allocator_setting(), mmapped, int(libc.mallinfo2().arena >= size))
"""


def probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env={**os.environ, **env},
                         check=True)
    setting, mmapped, kept = out.stdout.split()
    return setting, int(mmapped), bool(int(kept))


@pytest.mark.skipif(not sys.platform.startswith("linux") or "libc.so" not in (ctypes.util.find_library("c") or ""),
                    reason="glibc only")
def test_tuned_allocator_serves_big_buffers_from_the_heap_keeps_them_and_can_be_turned_off():
    assert probe() == ("tuned", 0, True)  # from the heap, and still there after free
    assert probe(MEMGPT_ALLOCATOR="default") == ("default", 1, False)
    assert probe(MEMGPT_ALLOCATOR="capped") == ("capped", 1, False)  # the earlier setting: 1 GiB at most
    bad = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**os.environ, "MEMGPT_ALLOCATOR": "bogus"})
    assert bad.returncode != 0 and "choose one of tuned, capped, default" in bad.stderr


def test_the_entry_point_tunes_before_parsing():
    code = ("import contextlib, io\nimport memgpt_jax.cli as cli, memgpt_jax.hostmem as h\n"
            "print(h.allocator_setting())\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    cli.main([])\n"
            "print(h.allocator_setting())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "unset"
    assert out.stdout.split()[-1] in ("tuned", "default")  # applied ("default" where it is not glibc)
