"""Loading a trained run for inference: model, parameters, tokenizer, label names.

Every checkpoint written by the trainer (or by ``quantize`` / ``prune``) carries
its resolved config and its tokenizer, so a run directory alone is enough::

    loaded = load_run("runs/imdb/student")          # newest checkpoint
    loaded.model, loaded.params, loaded.tokenizer, loaded.task
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from memgpt_jax.config import ModelConfig

# Label names of the datasets we prepare (index = label id).
LABEL_NAMES = {"imdb": ("negative", "positive")}


@dataclasses.dataclass
class LoadedRun:
    path: str
    model: Any  # flax module for ``task``
    params: Any  # may hold QTensors (quantized runs); pass through ``inference_params`` inside jit
    model_config: ModelConfig
    run_config: dict[str, Any]
    tokenizer: Any
    task: str  # "lm" | "classification" | "qa"
    quantized: bool

    @property
    def label_names(self) -> tuple[str, ...]:
        names = self.run_config.get("data", {}).get("label_names")
        if names:
            return tuple(names)
        dataset = self.run_config.get("data", {}).get("dataset")
        n = self.model_config.num_labels
        default = LABEL_NAMES.get(dataset)
        return default if default and len(default) == n else tuple(str(i) for i in range(n))


def tokenizer_from_meta(meta: dict[str, Any], run_config: dict[str, Any], path: str) -> Any:
    from memgpt_jax.data import load_tokenizer, tokenizer_from_config

    blob = meta.get("tokenizer")
    if blob:
        return tokenizer_from_config(json.loads(blob.decode("utf-8")))
    spec = run_config.get("data", {}).get("tokenizer")
    if not spec:
        raise ValueError(f"{path}: the checkpoint carries no tokenizer and its config names none")
    return load_tokenizer(spec)


def load_run(path: str, *, task: str | None = None, step: int | None = None) -> LoadedRun:
    """Loads the newest (or ``step``) checkpoint of the run in ``path``.

    ``task`` checks the run's task (a classification run cannot ``generate``);
    ``None`` accepts any."""
    from memgpt_jax import model as model_lib
    from memgpt_jax.training.checkpoint import load_params

    params, meta = load_params(path, step)
    run_config = meta.get("config") or {}
    if "model" not in run_config:
        raise ValueError(f"{path}: the checkpoint carries no model config")
    run_task = run_config.get("task", "lm")
    if task is not None and run_task != task:
        raise SystemExit(f"error: {path} is a {run_task!r} model; this command needs a {task!r} model")
    mc = ModelConfig.from_dict(run_config["model"])
    return LoadedRun(
        path=path, model=model_lib.build(mc, run_task), params=params, model_config=mc,
        run_config=run_config, tokenizer=tokenizer_from_meta(meta, run_config, path), task=run_task,
        quantized=bool(meta.get("quantization")),
    )
