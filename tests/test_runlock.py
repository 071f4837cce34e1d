"""One writer per run directory (memgpt_jax/training/runlock.py), without JAX: a live
holder refuses a second writer in one line; a leftover lock (dead process, or another
host's lock whose heartbeat stopped) is taken over with a warning."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from memgpt_jax.training import runlock


def _leftover(workdir, **fields):
    os.makedirs(workdir, exist_ok=True)
    info = {"host": socket.gethostname(), "pid": 0, "command": "memgpt-jax pretrain ...", "started": "then",
            "heartbeat": time.time(), "token": "old", **fields}
    with open(os.path.join(workdir, runlock.LOCK_FILE), "w") as f:
        json.dump(info, f)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_holder_refuses_a_second_writer_and_release_frees_it(tmp_path):
    run = str(tmp_path / "run")
    with runlock.hold(run, command="memgpt-jax pretrain A") as lock:
        assert runlock.holder(run)["pid"] == os.getpid()
        with pytest.raises(runlock.RunLockedError) as refused:
            runlock.RunLock(run, command="memgpt-jax pretrain B").acquire()
        message = str(refused.value)
        assert "\n" not in message and f"pid {os.getpid()}" in message and "`memgpt-jax pretrain A`" in message
        assert "Read-only commands" in message and lock.took_over is None
    assert not os.path.exists(os.path.join(run, runlock.LOCK_FILE)) and runlock.holder(run) is None
    with runlock.hold(run):  # free again
        pass


def test_the_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, capsys):
    run = str(tmp_path / "run")
    pid = _dead_pid()
    _leftover(run, pid=pid)
    assert runlock.holder(run) is None  # nobody holds its flock: a leftover
    with runlock.hold(run) as lock:
        assert lock.took_over["pid"] == pid
    err = capsys.readouterr().err
    assert f"pid {pid}" in err and "no longer running; taking over its lock" in err


def test_another_hosts_lock_is_live_until_its_heartbeat_stops(tmp_path, capsys):
    """Shared storage: the other host's flock may not reach us; its heartbeat decides."""
    run = str(tmp_path / "run")
    _leftover(run, host="tpu-worker-7", pid=4242)
    with pytest.raises(runlock.RunLockedError, match="pid 4242 on tpu-worker-7"):
        runlock.RunLock(run).acquire()
    assert runlock.holder(run)["host"] == "tpu-worker-7"
    _leftover(run, host="tpu-worker-7", pid=4242, heartbeat=time.time() - runlock.STALE_S - 1)
    assert runlock.holder(run) is None
    with runlock.hold(run) as lock:
        assert lock.took_over["host"] == "tpu-worker-7"
    assert "tpu-worker-7" in capsys.readouterr().err


def test_a_holder_in_another_process_refuses_and_its_death_frees_the_run(tmp_path):
    """Across processes the kernel's flock decides: held while the holder lives, gone with
    it (even after SIGKILL, which runs no cleanup)."""
    run = str(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from memgpt_jax.training import runlock; "
                               "runlock.RunLock(sys.argv[1], command='holder').acquire(); print('held', flush=True); "
                               "time.sleep(60)", run], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runlock.RunLockedError, match=f"`holder` \\(pid {holder.pid} on "):
            runlock.RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    with runlock.hold(run) as lock:
        assert lock.took_over["pid"] == holder.pid


def test_disabled_takes_nothing(tmp_path):
    """The non-coordinating processes of a multi-host run write through process 0's lock."""
    with runlock.hold(str(tmp_path / "run"), enabled=False) as lock:
        assert lock is None and not os.path.exists(tmp_path / "run")


def test_holding_again_in_the_same_process_is_a_no_op(tmp_path):
    """A command takes the lock before its set-up; the training loop it calls takes it again."""
    run = str(tmp_path / "run")
    with runlock.hold(run) as outer:
        with runlock.hold(run) as inner:
            assert inner is outer
        assert runlock.holder(run)["pid"] == os.getpid()  # still held after the inner block
    assert runlock.holder(run) is None
