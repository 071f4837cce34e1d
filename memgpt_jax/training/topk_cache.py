"""Precomputed teacher top-k logits for language-model distillation.

Running a large teacher at every student step can cost more than the student
itself. With ``distill.topk = k`` the loop first runs the teacher once over the
exact batches the student will see (the data pipeline is deterministic given
its seed) and stores, per step, the ``k`` largest logits (float16) and their
indices (int32) of every position in ``<workdir>/teacher_topk/``. Training then
reads them instead of running the teacher, with the KL computed against the
renormalised top-k distribution (``losses.kd_divergence_topk``).

Each cached step stores a fingerprint of its input tokens; a batch whose tokens
differ from the cached ones (a changed config or dataset) fails loudly instead
of distilling from the wrong teacher outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from memgpt_jax.progress import bar as progress_bar

VALUES, INDICES = "teacher_topk_values", "teacher_topk_indices"


def fingerprint(inputs: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(inputs).tobytes()).hexdigest()


def _step_path(directory: str, step: int) -> str:
    return os.path.join(directory, f"step_{step:08d}.npz")


def build_cache(directory: str, batches: Iterator[dict[str, np.ndarray]], teacher_topk: Callable[[Any], Any],
                steps: int, k: int, progress: bool = True) -> None:
    """Runs ``teacher_topk(batch) -> (values, indices)`` on ``steps`` batches and
    writes one file per step. Resumable: complete files are kept; a manifest is
    written last, so a half-built cache is never mistaken for a full one."""
    os.makedirs(directory, exist_ok=True)
    manifest = os.path.join(directory, "manifest.json")
    if os.path.isfile(manifest):
        with open(manifest) as f:
            meta = json.load(f)
        if meta.get("steps", 0) >= steps and meta.get("k") == k:
            return
    bar = None
    if progress:
            bar = progress_bar(total=steps, desc=f"teacher top-{k} cache", file=sys.stderr, dynamic_ncols=True)
    for step in range(steps):
        batch = next(batches)
        path = _step_path(directory, step)
        if not os.path.isfile(path):
            values, indices = teacher_topk(batch)
            tmp = path + ".tmp.npz"
            np.savez(tmp, values=np.asarray(values, np.float16), indices=np.asarray(indices, np.int32),
                     fingerprint=np.array(fingerprint(batch["inputs"])))
            os.replace(tmp, path)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    with open(manifest, "w") as f:
        json.dump({"steps": steps, "k": k}, f)


class CachedTeacherIterator:
    """Wraps the training iterator; adds the cached top-k of each step to its batch."""

    def __init__(self, base: Any, directory: str) -> None:
        self.base, self.directory, self.index = base, directory, 0

    def __iter__(self) -> "CachedTeacherIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = dict(next(self.base))
        path = _step_path(self.directory, self.index)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"teacher top-k cache has no step {self.index} ({path}); "
                                    "delete the cache directory to rebuild it for more steps")
        with np.load(path) as cached:
            if str(cached["fingerprint"]) != fingerprint(batch["inputs"]):
                raise ValueError(f"teacher top-k cache {path} was built for other input tokens; "
                                 f"delete {self.directory} to rebuild it for this config")
            batch[VALUES] = cached["values"]
            batch[INDICES] = cached["indices"]
        self.index += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"base": self.base.get_state(), "index": self.index}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.base.set_state(state["base"])
        self.index = int(state["index"])
