"""The host allocator setting of the memgpt-jax entry point (memgpt_jax/hostmem.py): a
1.5 GiB buffer (a training step's temporaries are one such block) comes from glibc's heap
and stays there once freed when tuned; it is a fresh mmap with the defaults. Tuned is the
default only for training commands and benchmarks on the CPU backend."""

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


def entry_point_setting(*argv, **env):
    """The allocator setting ``memgpt-jax ARGV`` applied, in a fresh process with ``env``."""
    code = ("import contextlib, io, sys\nimport memgpt_jax.cli as cli, memgpt_jax.hostmem as h\n"
            "assert h.allocator_setting() == 'unset'\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            f"    cli.main({list(argv)!r})\n"
            "print(h.allocator_setting())")
    environ = {k: v for k, v in os.environ.items() if k != "MEMGPT_ALLOCATOR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**environ, "JAX_PLATFORMS": "cpu", **env})
    return out.stdout.split()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux") or "libc.so" not in (ctypes.util.find_library("c") or ""),
                    reason="glibc only")
def test_the_entry_point_tunes_only_training_on_the_cpu_backend():
    assert entry_point_setting("pretrain", "--help") == "tuned"  # decided before parsing, from the command
    assert entry_point_setting("--debug", "distill", "--help") == "tuned"
    assert entry_point_setting("eval", "--help") == "default"  # a decode (eval --mbr) keeps glibc's defaults
    assert entry_point_setting() == "default"
    assert entry_point_setting("pretrain", "--help", JAX_PLATFORMS="cuda") == "default"  # an accelerator run
    assert entry_point_setting("eval", "--help", MEMGPT_ALLOCATOR="tuned") == "tuned"  # asked for: every command


def test_default_setting_follows_the_command_and_the_backend(monkeypatch):
    from memgpt_jax import hostmem

    monkeypatch.setattr(hostmem.importlib.util, "find_spec", lambda name: None)  # no TPU/GPU plugin installed
    for platforms, accelerator in (("cpu", False), ("cpu,cuda", False), ("cuda", True), ("tpu,cpu", True),
                                   ("", False), (" ", False)):
        monkeypatch.setenv("JAX_PLATFORMS", platforms)
        assert hostmem.accelerator_expected() is accelerator, platforms
        assert hostmem.default_setting("finetune") == ("default" if accelerator else "tuned")
    for command in ("eval", "decode", "generate", "chat", "export", "quantize", None):
        assert hostmem.default_setting(command) == "default", command
    monkeypatch.delenv("JAX_PLATFORMS")
    assert not hostmem.accelerator_expected()
    monkeypatch.setattr(hostmem.importlib.util, "find_spec", lambda name: object() if name == "libtpu" else None)
    assert hostmem.accelerator_expected() and hostmem.default_setting("pretrain") == "default"  # JAX would take the TPU
