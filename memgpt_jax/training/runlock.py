"""One writer per run directory.

A command that writes a run (``pretrain``, ``finetune``, ``distill``, and the
commands that write a new run: ``quantize``, ``prune``, ``average``, ``import``)
holds ``RUN/run.lock`` while it writes. The file says who holds it (host, process,
command, start) and is refreshed every :data:`HEARTBEAT_S` seconds. A second writer
is refused at once with one line naming the holder (:class:`RunLockedError`).
Read-only commands (``eval``, ``generate``, ``export``, ...) never take it: they
read the newest complete checkpoint of a live run.

How a holder is known to be alive:

- on one machine, by the operating system: the file is ``flock``-ed while held,
  and the kernel drops that lock when the process dies (``kill -9`` included); a
  lock found unlocked is a leftover and is taken over with a warning naming the
  dead process;
- on shared storage across machines (NFS, a bucket mounted with FUSE), where
  ``flock`` may not reach the other host, by the heartbeat: a lock of another host
  refreshed within :data:`STALE_S` seconds is live; an older one is taken over with
  a warning.

In a multi-host run only the coordinating process (``jax.process_index() == 0``)
takes the lock; the others write through it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
from typing import Any, Iterator

LOCK_FILE = "run.lock"
HEARTBEAT_S = 30.0  # how often a holder refreshes the file
STALE_S = 300.0  # a lock of another host not refreshed for this long is a leftover

try:  # POSIX; elsewhere only the heartbeat and the process table decide
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunLockedError(OSError):
    """Another live process writes this run directory."""


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process (EPERM): alive
        return True
    return True


def _is_live(holder: dict[str, Any] | None, flocked: bool) -> bool:
    """Whether the lock file's content ``holder`` names a live writer, for a reader that could
    (``flocked``) or could not take the file's flock (held elsewhere, or not supported)."""
    if not holder:
        return False
    if holder.get("host") == socket.gethostname():
        # a flock we could take means the holder's process is gone, unless flock does not work
        # here (some network filesystems): then the process table decides
        return not flocked and _pid_alive(int(holder.get("pid", -1)))
    return time.time() - float(holder.get("heartbeat", 0)) < STALE_S


def _read(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        holder = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def _same_file(fd: int, path: str) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not one a releasing holder unlinked)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _describe(holder: dict[str, Any]) -> str:
    command = holder.get("command") or "a command"
    return (f"`{command}` (pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')})")


class RunLock:
    """Holds ``workdir/run.lock`` from :meth:`acquire` to :meth:`release`."""

    def __init__(self, workdir: str, *, command: str | None = None) -> None:
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self.command = command or " ".join(["memgpt-jax", *sys.argv[1:]])
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.took_over: dict[str, Any] | None = None  # the leftover lock this one replaced

    def acquire(self) -> "RunLock":
        os.makedirs(self.workdir, exist_ok=True)
        self._token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        self._started = _now()
        for _ in range(10):  # a holder may release (unlink the file) between our open and our flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                flocked = self._flock(fd)
                if flocked and not _same_file(fd, self.path):
                    os.close(fd)
                    continue
                self._claim(fd, flocked)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            self._beat = threading.Thread(target=self._heartbeat, name="memgpt-run-lock", daemon=True)
            self._beat.start()
            return self
        raise self._refused(None)

    def _flock(self, fd: int) -> bool:
        """Takes the flock of ``fd``; False where the filesystem does not support it."""
        if fcntl is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live process on this machine holds it
            raise self._refused(_read(fd)) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            return False
        return True

    def _claim(self, fd: int, flocked: bool) -> None:
        holder = _read(fd)
        if _is_live(holder, flocked):
            raise self._refused(holder)
        if holder:
            self.took_over = holder
            print(f"warning: {self.workdir} was locked by {_describe(holder)}, which is no longer running; "
                  "taking over its lock", file=sys.stderr)
        self._write(fd)
        if not flocked:  # two starters can both get here: the last writer wins, the other
            time.sleep(0.5)  # reads someone else's token back and is refused
        mine = _read(fd)
        if not mine or mine.get("token") != self._token:
            raise self._refused(mine)

    def _refused(self, holder: dict[str, Any] | None) -> RunLockedError:
        who = _describe(holder) if holder else "another process"
        return RunLockedError(
            f"{self.workdir} is being written by {who}; one run directory takes one writer. Wait for it "
            f"to finish (or stop it), or give this command another --workdir/--out. Read-only commands "
            f"(eval, generate, export) work on it meanwhile")

    def _write(self, fd: int) -> None:
        info = {"host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                "started": self._started, "heartbeat": time.time(), "token": self._token}
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        os.fsync(fd)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            fd = self._fd
            if fd is None:
                return
            try:
                self._write(fd)
            except OSError:  # a full disk, say: the run reports its own write errors
                pass

    def release(self) -> None:
        if self._fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        fd, self._fd = self._fd, None
        try:
            holder = _read(fd)
            if holder and holder.get("token") == self._token:
                os.unlink(self.path)  # while still flocked: nobody reads a half-released lock
        except OSError:
            pass
        finally:
            os.close(fd)  # drops the flock


_HELD: dict[str, RunLock] = {}  # the locks this process holds, by real path: holding one again is a no-op


@contextlib.contextmanager
def hold(workdir: str, *, enabled: bool = True, command: str | None = None) -> Iterator[RunLock | None]:
    """Holds the run lock of ``workdir`` for the block (``enabled=False``: does nothing, for
    the non-coordinating processes of a multi-host run). Re-entrant: a command takes the lock
    before its slow set-up, and the training loop it then calls holds the same one."""
    key = os.path.realpath(workdir)
    if not enabled or key in _HELD:
        yield _HELD.get(key)
        return
    lock = _HELD[key] = RunLock(workdir, command=command).acquire()
    try:
        yield lock
    finally:
        del _HELD[key]
        lock.release()


def holder(workdir: str) -> dict[str, Any] | None:
    """Who holds ``workdir``'s lock now (``None`` when nobody live does), by the rule
    :meth:`RunLock.acquire` applies."""
    path = os.path.join(workdir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        info, flocked = _read(fd), False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                flocked = True
            except BlockingIOError:  # a live process on this machine holds it
                return info
            except OSError:  # flock not supported here
                pass
        return info if _is_live(info, flocked) else None
    finally:
        os.close(fd)  # drops our shared flock, if any
