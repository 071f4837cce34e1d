"""Checkpoints: the only module that imports Orbax.

A checkpoint of step ``N`` lives in ``<workdir>/checkpoints/N`` and holds:

- ``state``: the train state (params, aux params, optimizer state, step);
- ``meta``: JSON with the data-iterator state, the resolved config, and the
  tokenizer model (base64) so a checkpoint is self-contained.

Orbax writes into a temporary directory and renames it when complete, so a
run killed mid-save leaves no checkpoint that looks finished. ``restore_latest``
walks back from the newest step: a checkpoint that fails to restore (corrupt
or half-deleted) is reported and skipped, never used.
"""

from __future__ import annotations

import base64
import errno
import glob
import logging
import os
import shutil
import sys
import threading
import time
from typing import Any, Callable, Iterable

import jax
import orbax.checkpoint as ocp

from memgpt_jax.compress import quantize
from memgpt_jax.training import runlock


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, no permission); the message names
    the newest complete checkpoint, which is left intact."""


# Exceptions of a failed write: OSError from Python, TensorStore's status text from C++.
_WRITE_FAILURES = ("os_error_code", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "No space left", "Disk quota")


class Checkpointer:
    """Periodic + final saves, keep-N, async writes. A write that fails (disk full) stops
    with one ``CheckpointWriteError`` line; its partial files are removed, the earlier
    checkpoints stay, and a rerun resumes from the newest complete one."""

    def __init__(self, workdir: str, *, keep: int = 3, save_every: int = 1000, async_save: bool = True,
                 keep_period: int = 0) -> None:
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.save_every = max(int(save_every), 1)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, keep_period=keep_period or None, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))
        self._saving: int | None = None  # the step of a save that may still be in flight
        self._failed = False  # a write failed: the manager is closed and the error reported
        _quiet_orbax_write_errors()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def should_save(self, step: int) -> bool:
        return step % self.save_every == 0

    def save(
        self, step: int, state: Any, *, data_state: Any = None, config: Any = None,
        tokenizer: bytes | None = None, force: bool = False, wall_s: float | None = None,
        cpu_s: float | None = None,
    ) -> bool:
        if step in self.manager.all_steps():
            return False
        meta = {
            "step": int(step),
            "data_state": data_state,
            "config": config,
            "tokenizer_b64": base64.b64encode(tokenizer).decode() if tokenizer else None,
            "wall_s": wall_s,  # training wall time up to this step, across restarts
            "cpu_s": cpu_s,  # CPU time of the training processes (every thread), across restarts
        }
        self.wait()  # a failure of the previous asynchronous save surfaces here, named
        self._saving = step
        try:
            return self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                force=True,
            )
        except Exception as e:
            raise self._write_failed(e) from e

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        meta = dict(restored["meta"])
        if meta.get("tokenizer_b64"):
            meta["tokenizer"] = base64.b64decode(meta.pop("tokenizer_b64"))
        return restored["state"], meta

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """The newest checkpoint that restores; ``None`` when there is none. Newer ones that
        do not restore are moved to ``<workdir>/unusable_checkpoints/`` (kept for inspection,
        out of the way of the saves that will replace them)."""
        steps = self.steps()
        found = newest_usable(self.directory, reversed(steps), lambda s: self.restore(s, abstract_state))
        newer = [s for s in steps if found is None or s > found[0]]
        if newer:
            aside = os.path.join(os.path.dirname(self.directory), "unusable_checkpoints")
            os.makedirs(aside, exist_ok=True)
            for s in newer:
                os.replace(os.path.join(self.directory, str(s)), os.path.join(aside, f"{s}.{int(time.time())}"))
            self.manager.reload()
            print(f"warning: moved the unusable checkpoints {newer} to {aside}", file=sys.stderr)
        return None if found is None else (found[0], *found[1])

    def saved_config(self) -> dict[str, Any] | None:
        """The config saved with the newest checkpoint whose metadata reads (``None``: none)."""
        for step in reversed(self.steps()):
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            except Exception:  # noqa: BLE001 - unreadable: restore_latest reports it
                continue
            return meta.get("config")
        return None

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._write_failed(e) from e
        self._saving = None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if not self._failed:  # a failed write closed the manager and is being reported
                self.manager.close()

    def _write_failed(self, error: Exception) -> Exception:
        """``error`` as one ``CheckpointWriteError`` line when it is a failed write (other
        errors are returned unchanged); the partial checkpoint is deleted to free its space."""
        if not (isinstance(error, OSError) or any(m in str(error) for m in _WRITE_FAILURES)):
            return error
        step, self._saving, self._failed = self._saving, None, True
        try:  # lets the save's other writer threads end before their files are removed
            self.manager.close()
        except Exception:  # noqa: BLE001 - they fail the same way
            pass
        _silence_closed_loop_callbacks()  # TensorStore writes still pending call back into it
        for _ in range(20):  # those writes may recreate what is removed; the next start cleans up too
            partials = glob.glob(os.path.join(self.directory, "*.orbax-checkpoint-tmp*"))
            if not partials:
                break
            for partial in partials:
                shutil.rmtree(partial, ignore_errors=True)
            time.sleep(0.1)
        complete = sorted(int(d) for d in os.listdir(self.directory) if d.isdigit() and int(d) != step)
        newest = f"step {complete[-1]}" if complete else "none"
        reason, advice = _write_failure(error)
        return CheckpointWriteError(
            f"could not write the checkpoint of step {step} in {self.directory} ({reason}); "
            f"the newest complete checkpoint is {newest}. {advice}, then rerun the same "
            f"command to resume.")


def save_params(workdir: str, params: Any, meta: dict[str, Any], step: int = 0) -> str:
    """Writes an inference-only checkpoint (parameters + meta, no optimizer state) that
    ``load_params`` reads; ``meta`` may carry ``config``, ``tokenizer`` (bytes) and
    ``quantization``. Returns the checkpoint directory."""
    with runlock.hold(workdir):
        return _save_params(workdir, params, meta, step)


def _save_params(workdir: str, params: Any, meta: dict[str, Any], step: int) -> str:
    meta = dict(meta)
    tokenizer = meta.pop("tokenizer", None)
    quantization = meta.pop("quantization", None)
    ckpt = Checkpointer(workdir, keep=1, async_save=False)
    if ckpt.steps():
        raise FileExistsError(f"{ckpt.directory} already holds checkpoints {ckpt.steps()}; choose a new --out")
    meta_json = {
        "step": int(step), "data_state": None, "config": meta.pop("config", None),
        "tokenizer_b64": base64.b64encode(tokenizer).decode() if tokenizer else None,
        "quantization": quantization, **meta,
    }
    ckpt.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave({"params": params}),
                                                    meta=ocp.args.JsonSave(meta_json)), force=True)
    ckpt.close()
    return ckpt.directory


def abstract_like(tree: Any) -> Any:
    """``ShapeDtypeStruct``s (with shardings) describing ``tree``, for restoring."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
    )


def load_params(workdir: str, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Model parameters and meta (config, tokenizer) of a run, without its optimizer
    state: for teachers, evaluation and export."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(directory):
        runs = sorted(d for d in os.listdir(workdir) if os.path.isdir(os.path.join(workdir, d, "checkpoints"))) \
            if os.path.isdir(workdir) else []
        hint = f"; it holds runs: {', '.join(os.path.join(workdir, r) for r in runs)}" if runs else \
            ": train a model there first"
        raise FileNotFoundError(f"no checkpoints under {directory}{hint}")
    manager = ocp.CheckpointManager(directory, item_names=("state", "meta"))
    try:
        steps = sorted(manager.all_steps(), reverse=True)
        if step is not None:
            if step not in steps:
                raise FileNotFoundError(f"no checkpoint of step {step} under {directory} (have {sorted(steps)})")
            steps = [step]
        found = newest_usable(directory, steps, lambda s: manager.restore(
            s, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())))
    finally:
        manager.close()
    if found is None:
        raise FileNotFoundError(f"no usable checkpoint under {directory}")
    restored = found[1]
    meta = dict(restored["meta"])
    if meta.get("tokenizer_b64"):
        meta["tokenizer"] = base64.b64decode(meta.pop("tokenizer_b64"))
    params = restored["state"]["params"]
    if meta.get("quantization"):  # a quantized checkpoint: rebuild the QTensors
        params = quantize.decode(params, meta["quantization"]["tensors"])
    return params, meta


def newest_usable(directory: str, steps: Iterable[int], restore: Callable[[int], Any]) -> tuple[int, Any] | None:
    """``(step, restore(step))`` of the first step that restores. Each one that does not
    (corrupt, half-deleted) is skipped with one warning line: which, why in a few words,
    and what is used instead."""
    skipped = []
    for step in steps:
        try:
            result = restore(step)
        except Exception as e:  # noqa: BLE001 - any failure means "do not use this one"
            skipped.append(f"step {step} ({_reason(e)})")
            _silence_closed_loop_callbacks()
            continue
        if skipped:
            print(f"warning: {directory}: unusable checkpoint {', '.join(skipped)}; using step {step}", file=sys.stderr)
        return step, result
    if skipped:
        print(f"warning: {directory}: unusable checkpoint {', '.join(skipped)}; none is usable", file=sys.stderr)
    return None


def _silence_closed_loop_callbacks() -> None:
    """After a failed restore, TensorStore's pending reads still call back into Orbax's
    closed event loop from C++ threads; each reports an unraisable "RuntimeError: Event
    loop is closed" traceback (hundreds of lines, harmless). Drop exactly those."""
    if getattr(sys.unraisablehook, "_memgpt_quiet", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            previous(unraisable)

    hook._memgpt_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _write_failure(error: Exception) -> tuple[str, str]:
    """Why a checkpoint write failed, in a few words, and what to do about it (free space
    only when space is what ran out)."""
    text, code = str(error), getattr(error, "errno", None)
    if "No space left" in text or code == errno.ENOSPC:
        return "no space left on device", "Free space (or lower train.keep)"
    if "Disk quota" in text or code == errno.EDQUOT:
        return "disk quota exceeded", "Free space (or lower train.keep)"
    reason = error.strerror if isinstance(error, OSError) and error.strerror else _reason(error)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "Permission denied" in text or "Read-only" in text:
        return reason, "Make the directory writable"
    if code == errno.ENOTEMPTY or "Directory not empty" in text or "missing .zarray" in text:
        return reason, ("Make sure no other process writes this run directory (another command, or a "
                        "relaunched job while the first still runs)")
    return reason, "Fix the cause"


def _quiet_orbax_write_errors() -> None:
    """A failed asynchronous save makes Orbax log each failing thread's traceback (about
    200 lines for one full disk) before the error reaches the caller, who reports it in one
    line; those logs are dropped (``MEMGPT_DEBUG=1`` keeps them), as are the tracebacks
    of Orbax's background threads dying of the same error."""
    if os.environ.get("MEMGPT_DEBUG") or getattr(threading.excepthook, "_memgpt_quiet", False):
        return

    class DropOrbaxErrors(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not ("/orbax/" in record.pathname and record.levelno >= logging.ERROR)

    logging.getLogger("absl").addFilter(DropOrbaxErrors())
    previous = threading.excepthook

    def hook(args: Any) -> None:
        frames = []
        tb = args.exc_traceback
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        if not any("/orbax/" in f for f in frames):
            previous(args)

    hook._memgpt_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _reason(error: Exception, limit: int = 100) -> str:
    """A few words on why a restore failed (TensorStore messages run to pages)."""
    text = " ".join(str(error).split())
    for cut in (" See full TensorStore details", " [source locations", "Traceback"):
        text = text.split(cut)[0]
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
