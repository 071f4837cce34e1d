"""Starting a student from its teacher's layers.

A teacher is a :class:`~memgpt_jax.training.run.Run` (``open_run``, or a converted
Hugging Face model), kept out of the student's state and never saved with it.
``init_student_from_teacher`` starts a student from every other teacher layer
(as DistilBERT) when the shapes allow.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from memgpt_jax.config import ModelConfig


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
