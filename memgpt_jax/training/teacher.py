"""Teachers: one run, an ensemble of runs, and starting a student from a teacher's layers.

A teacher is a :class:`~memgpt_jax.training.run.Run` (``open_run``, or a converted
Hugging Face model), kept out of the student's state and never saved with it.
``open_teacher`` is the one way to open what ``distill.teacher`` names: a run directory,
``hf:DIR`` (a Hugging Face model, converted by the opener the caller passes in: this layer
does not import the export code), or several of them separated by commas, opened as one
:class:`TeacherEnsemble` (their probabilities averaged). ``init_student_from_teacher`` starts a student from
every other teacher layer (as DistilBERT) when the shapes allow.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from memgpt_jax.config import ModelConfig
from memgpt_jax.model import ModelOutput
from memgpt_jax.training.run import Run, RunError, open_run

HF_PREFIX = "hf:"  # distill.teacher=hf:DIR names a Hugging Face directory


class TeacherEnsemble(nn.Module):
    """Several trained models of one task as a single teacher.

    Its logits are ``log(mean_i softmax(z_i))``: the members' probabilities averaged
    (the usual ensemble), returned as log-probabilities so that every distillation
    loss reads them as logits (at temperature ``T`` the student matches
    ``softmax(log p_ens / T)``). Parameters are ``{"members_0": ..., "members_1": ...}``.
    Hidden-state and attention transfer need one teacher's layers and are refused.
    """

    members: tuple[nn.Module, ...]

    @property
    def config(self) -> ModelConfig:  # what shape-only helpers (model.logical_axes) read
        return min((m.config for m in self.members), key=lambda c: c.max_len)

    def __call__(self, input_ids: jax.Array, **kwargs: Any) -> ModelOutput:
        if kwargs.get("output_hidden_states") or kwargs.get("output_attentions"):
            raise ValueError("a teacher ensemble gives logits only: hidden-state and attention "
                             "transfer need a single teacher (distill.hidden_weight / attention_weight = 0)")
        outs = [m(input_ids, **kwargs) for m in self.members]
        fields = ("logits",) if outs[0].logits is not None else ("start_logits", "end_logits")
        mixed = {}
        for name in fields:
            logp = jnp.stack([jax.nn.log_softmax(getattr(o, name).astype(jnp.float32), axis=-1) for o in outs])
            mixed[name] = jax.nn.logsumexp(logp, axis=0) - jnp.log(float(len(outs)))
        return outs[0].replace(**mixed)


def open_teacher(spec: str, task: str | None = None, *,
                 open_hf: Callable[[str, str | None], Run] | None = None) -> Run:
    """The teacher that ``distill.teacher`` names: one run directory, ``hf:DIR``, or several
    of either separated by commas (an ensemble; same task, vocabulary and labels; quantized
    runs are refused). ``task`` checks each member's task (``None`` accepts any);
    ``open_hf(directory, task)`` converts an ``hf:`` member (the command line passes
    ``memgpt_jax.export.hf_gpt2.open_hf_run``). Raises ``FileNotFoundError``,
    :class:`RunError` or the opener's conversion error."""
    paths = [p.strip() for p in spec.split(",") if p.strip()]
    if not paths:
        raise RunError("distill.teacher is empty: name a run directory, hf:DIR, or several separated by commas")

    def one(path: str) -> Run:
        if not path.startswith(HF_PREFIX):
            return open_run(path, task=task)
        if open_hf is None:
            raise RunError(f"{path}: a Hugging Face teacher needs a converter (open_teacher(..., open_hf=...); "
                           "the memgpt-jax commands pass one)")
        return open_hf(path[len(HF_PREFIX):], task)

    runs = [one(p) for p in paths]
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    for r in runs:
        c, f = r.model_config, first.model_config
        if r.task != first.task or c.vocab_size != f.vocab_size or c.num_labels != f.num_labels:
            raise RunError(f"distill.teacher: {r.path} ({r.task}, vocabulary {c.vocab_size}, {c.num_labels} labels) "
                           f"does not match {first.path} ({first.task}, vocabulary {f.vocab_size}, "
                           f"{f.num_labels} labels); an ensemble needs one task, vocabulary and label set")
        if r.quantized:
            raise RunError(f"distill.teacher: {r.path} is quantized; ensemble float runs")
    model = TeacherEnsemble(tuple(r.model for r in runs))
    params = {f"members_{i}": r.params for i, r in enumerate(runs)}
    config = first.config.replace(model={"max_len": model.config.max_len})
    return dataclasses.replace(first, path=",".join(r.path for r in runs), model=model, params=params, config=config)


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
