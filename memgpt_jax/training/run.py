"""A saved run, opened in one place.

Every checkpoint written by the trainer (or by ``quantize`` / ``prune`` /
``import``) carries its resolved :class:`~memgpt_jax.run_config.RunConfig` and its
tokenizer, so a run directory alone is enough. Commands, teacher loading, the
evaluators and the benchmarks all open runs here::

    run = open_run("runs/imdb/student")              # newest usable checkpoint
    run = open_run("runs/imdb/student", step=500, task=config.task)  # refuses a run of another task
    run.model, run.params, run.tokenizer, run.config.data.seq_len, run.config.data.data_dir
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import flax.linen as nn

from memgpt_jax import data as data_lib
from memgpt_jax import tasks
from memgpt_jax.config import ModelConfig
from memgpt_jax.run_config import ConfigError, RunConfig
from memgpt_jax.training.checkpoint import load_params

class RunError(ValueError):
    """A run directory that cannot be opened; the message says why in one line."""


@dataclasses.dataclass
class Run:
    """A trained model with everything needed to use or evaluate it."""

    path: str
    step: int
    config: RunConfig
    model: nn.Module  # the flax module of ``config.task``'s head
    params: Any  # may hold QTensors (quantized runs); pass through ``inference_params`` inside jit
    tokenizer: Any  # None: the run carries none (an imported model); text commands refuse it
    quantization: dict[str, Any] | None  # the quantization spec of a quantized run

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def model_config(self) -> ModelConfig:
        return self.config.model

    @property
    def quantized(self) -> bool:
        return bool(self.quantization)

    @functools.cached_property
    def label_names(self) -> tuple[str, ...]:
        """The config's ``data.label_names``, else those its prepared dataset stores, else the ids."""
        n, dc = self.model_config.num_labels, self.config.data
        names = dc.label_names or (data_lib.label_names(dc.name, dc.data_dir) if dc.name else ())
        return tuple(names) if len(names) == n else tuple(str(i) for i in range(n))


def open_run(path: str, *, step: int | None = None, task: str | None = None) -> Run:
    """The newest usable (or ``step``) checkpoint of the run in ``path``.

    ``task`` checks the run's task (a classification run cannot ``generate``);
    ``None`` accepts any. Raises ``FileNotFoundError`` when there is no checkpoint and
    :class:`RunError` when the run cannot be used. ``path`` may also name the run's
    ``checkpoints`` directory or one checkpoint in it (``.../checkpoints/800``)."""
    path, step = run_path(path, step)
    params, meta = load_params(path, step)
    saved = meta.get("config")
    if not saved or "model" not in saved:
        raise RunError(f"{path}: the checkpoint carries no run config; it cannot be rebuilt")
    try:
        config = RunConfig.from_saved(saved)
        spec = tasks.get(config.task)
    except ConfigError as e:
        raise RunError(f"{path}: its saved config is not valid ({e})") from None
    if task is not None and config.task != task:
        raise RunError(f"{path} is a {config.task!r} model; this needs a {task!r} model")
    return Run(path=path, step=int(meta.get("step") or 0), config=config,
               model=spec.build(config.model), params=params,
               tokenizer=_tokenizer(meta, config), quantization=meta.get("quantization"))


def run_path(path: str, step: int | None = None) -> tuple[str, int | None]:
    """``(run directory, step)`` for a run directory, its ``checkpoints`` directory or one
    checkpoint in it; a path that does not exist is a ``FileNotFoundError`` saying so."""
    if "://" in path:  # gs:// and other remote runs: as given
        return path, step
    clean = os.path.normpath(path)
    if not os.path.exists(clean):
        raise FileNotFoundError(f"{path} does not exist: give a run directory (the --workdir of a training run)")
    parent, name = os.path.split(clean)
    if name == "checkpoints" and os.path.isdir(clean):
        return parent or ".", step
    if name.isdigit() and os.path.basename(parent) == "checkpoints":
        if step is not None and step != int(name):
            raise RunError(f"{path} is the checkpoint of step {name}, but --step {step} was given")
        return os.path.dirname(parent) or ".", int(name)
    return path, step


def _tokenizer(meta: dict[str, Any], config: RunConfig) -> Any:
    """The checkpoint's own tokenizer, else the one its config names, else ``None`` (an
    imported model without one still serves as a teacher or an export source)."""
    blob = meta.get("tokenizer")
    if blob:
        return data_lib.tokenizer_from_config(json.loads(blob.decode("utf-8")))
    return data_lib.load_tokenizer(config.data.tokenizer) if config.data.tokenizer else None
