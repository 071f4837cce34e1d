"""Teachers for distillation: loaded from a finished run, kept out of the student's state.

``load_teacher("runs/teacher")`` restores the newest usable checkpoint of a run
(parameters only; its optimizer state is never loaded) and rebuilds its model
from the config saved with it. ``init_student_from_teacher`` starts a student
from every other teacher layer (as DistilBERT) when the shapes allow.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from memgpt_jax import model as model_lib
from memgpt_jax.config import ModelConfig
from memgpt_jax.training.checkpoint import load_params


def load_teacher(spec: str, head: str) -> tuple[Any, Any, ModelConfig]:
    """``(teacher_model, teacher_params, teacher_config)`` from a run directory, or from
    a Hugging Face GPT-2 directory given as ``hf:DIR``."""
    if spec.startswith("hf:"):  # a Hugging Face GPT-2 directory, converted on load
        from memgpt_jax.export.hf_gpt2 import import_hf_gpt2

        t_config, params = import_hf_gpt2(spec[len("hf:"):], head)
        return model_lib.build(t_config, head), params, t_config
    params, meta = load_params(spec)
    config = meta.get("config") or {}
    if "model" not in config:
        raise ValueError(f"the checkpoint in {spec} carries no model config; cannot rebuild the teacher")
    teacher_task = config.get("task", "lm")
    if teacher_task != head:
        raise ValueError(f"teacher run {spec} was trained for task {teacher_task!r}, the student for {head!r}")
    t_config = ModelConfig.from_dict(config["model"])
    return model_lib.build(t_config, head), params, t_config


def init_student_from_teacher(student: Any, teacher: Any, s_cfg: ModelConfig, t_cfg: ModelConfig) -> Any:
    """Copies embeddings, final norm, head, and teacher block ``i * stride`` into
    student block ``i`` (``stride = t_layers // s_layers``; 2 for "every other
    layer"). Shapes must match except the number of layers."""
    stride = t_cfg.n_layers // s_cfg.n_layers
    if stride < 1:
        raise ValueError(f"student has more layers ({s_cfg.n_layers}) than the teacher ({t_cfg.n_layers})")
    mapping = {f"h_{i}": f"h_{i * stride}" for i in range(s_cfg.n_layers)}
    s_tr, t_tr = dict(student["transformer"]), teacher["transformer"]
    for name in list(s_tr):
        src = mapping.get(name, name)
        if src not in t_tr:
            continue
        s_shapes = jax.tree.map(np.shape, s_tr[name])
        t_shapes = jax.tree.map(np.shape, t_tr[src])
        if s_shapes != t_shapes:
            raise ValueError(
                f"distill.init_from_teacher: student {name} and teacher {src} differ in shape "
                f"({s_shapes} vs {t_shapes}); use equal widths/heads or turn init_from_teacher off"
            )
        s_tr[name] = t_tr[src]
    out = {**student, "transformer": s_tr}
    for head in set(student) - {"transformer"}:
        if head in teacher and jax.tree.map(np.shape, teacher[head]) == jax.tree.map(np.shape, student[head]):
            out[head] = teacher[head]
    return jax.tree.map(lambda x: np.array(x), out)
