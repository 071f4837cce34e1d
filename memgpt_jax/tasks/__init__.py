"""Tasks, each declared once: a registry the trainer, the evaluator, the commands and export look up.

A :class:`Task` is one declaration (seqio's ``TaskRegistry.add`` habit): the model head it
trains, the batch keys the model reads, the input pipeline, the hard-label loss and its
weight, what distillation compares, the evaluator's extras, the rules a config must
follow, the Hugging Face architecture an export maps it to, and the commands that
accept it. Nothing outside this package tests a task's name; code asks
``tasks.get(config.task)`` and reads the declaration. The built-in tasks (language
modelling, which also trains prompt -> target pairs; classification; extractive QA) are
declared in :mod:`memgpt_jax.tasks.builtin`. A fork adds one with::

    from memgpt_jax import tasks
    tasks.register(tasks.Task(name="tagging", head=MyTagger, inputs=my_iterator, loss=my_loss, ...))

after which ``RunConfig(task="tagging")`` trains, evaluates, saves and reopens through
the usual ``train`` / ``evaluate`` / ``open_run`` (``tests/test_task_registry.py`` does
exactly that; README "Adding a task" walks through it).

Where it sits (import-linter's layers contract in setup.cfg): above ``data`` and
``model``, below ``training``. It imports what it declares from below (head classes,
input pipelines, its hard-label losses in :mod:`memgpt_jax.tasks.losses`); what a higher
layer owns is declared as data that layer reads: ``hf_architecture`` (the export layer
holds the tensor mapping per architecture; ``export_params`` add a new head's parameters
to its torch table), ``commands`` (command names the CLI checks),
``eval_report`` (the name of the decoding evaluation ``memgpt-jax eval`` runs, kept in
``memgpt_jax.apps``), ``headline`` (the metric compression reports lead with).
``run_config`` sits below every layer, so it validates a run config's structure only;
a task's own rules run in :func:`check` where a config meets its task (training, opening
a run, the train commands), and fail the same way: one :class:`ConfigError` line
naming the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn

from memgpt_jax.run_config import ConfigError, RunConfig

Rule = Callable[[RunConfig], None]


@dataclasses.dataclass(frozen=True)
class Task:
    """One task. Callables receive and return plain arrays and dicts (batches as the
    input pipeline yields them; ``out`` is the head's :class:`~memgpt_jax.model.ModelOutput`).

    - ``head(model_config, attention_fn)``: the Flax model; ``model_inputs``: the batch
      keys passed to ``model.apply`` besides ``inputs``.
    - ``inputs(config, source, tokenizer, *, train, teacher_offsets, **common)``: the
      iterator over ``source`` (``common``: batch_size, seed, shuffle, num_epochs,
      drop_remainder; ``teacher_offsets``: ``None`` unless the config sets them).
    - ``loss(out, batch, label_smoothing) -> (loss, metrics, weight)``: the hard-label
      loss, its metrics, and the batch's weight (tokens when ``token_level``, else examples).
    - ``distill_logits(out)``: the logits distillation compares (several are averaged);
      ``distill_mask(batch)``: where it compares them.
    - ``weight_unit``: what the loss's weight counts, as the evaluator reports it.
    - ``token_level``: a language model: perplexity is reported, the top-k teacher cache and
      prompt -> target data apply, and a teacher must share the vocabulary, not the labels.
    - ``predictions(out)``: class ids; when set, the evaluator adds the classification
      report of ``batch["label"]``.
    - ``rules(config)``: raises :class:`ConfigError` for a config this task cannot train.
    - ``teacher_offsets``: the input pipeline attaches ``distill.teacher_offsets`` rows.
    - Read by higher layers (see the module docstring): ``headline``, ``eval_report(config)``,
      ``hf_architecture`` (``None``: no GPT-2 export), ``commands``, and ``export_params``:
      ``(our path, torch state-dict name, "linear" | "copy")`` of head parameters the export
      table (``export/mapping.py``) does not already hold, so ``--format torch`` writes them.
    """

    name: str
    head: type[nn.Module]
    inputs: Callable[..., Any]
    loss: Callable[[Any, dict[str, Any], float], tuple[Any, dict[str, Any], Any]]
    distill_logits: Callable[[Any], tuple[Any, ...]]
    distill_mask: Callable[[dict[str, Any]], Any]
    model_inputs: tuple[str, ...] = ("kv_valid",)
    weight_unit: str = "examples"
    token_level: bool = False
    predictions: Callable[[Any], Any] | None = None
    rules: Rule | None = None
    teacher_offsets: bool = False
    headline: str = "loss"
    eval_report: Callable[[RunConfig], str | None] = lambda config: None
    hf_architecture: str | None = None
    export_params: tuple[tuple[str, str, str], ...] = ()
    commands: frozenset[str] = frozenset({"finetune"})

    def build(self, model_config: Any, attention_fn: Any = None) -> nn.Module:
        return self.head(model_config, attention_fn)

    def batch_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments of ``model.apply`` taken from a batch."""
        return {k: batch[k] for k in self.model_inputs if k in batch}


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Adds ``task``; a second, different task under a taken name is refused."""
    old = _REGISTRY.get(task.name)
    if old is not None and old != task:
        raise ValueError(f"task {task.name!r} is already registered")
    _REGISTRY[task.name] = task
    return task


def get(name: str) -> Task:
    if name not in _REGISTRY:
        raise ConfigError(f"task: unknown value {name!r}; choose one of {names()}")
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def accepting(command: str) -> tuple[str, ...]:
    """The tasks whose ``commands`` include ``command``."""
    return tuple(n for n, t in _REGISTRY.items() if command in t.commands)


def require(task: str, command: str, what: str) -> None:
    """Raises ``ValueError`` unless ``command`` accepts ``task`` (``what``: the run, for the message)."""
    if command not in get(task).commands:
        raise ValueError(f"{what} is a {task!r} model; this needs a {' or '.join(map(repr, accepting(command)))} "
                         f"model ({command})")


def check(config: RunConfig) -> Task:
    """The config's task, after the rules every task shares and its own."""
    task, d = get(config.task), config.distill

    def rule(ok: bool, field: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{field}: {message}")

    rule(task.token_level or config.data.dataset != "pairs", "data.dataset",
         f"'pairs' (prompt -> target) trains a token-level task such as {_token_level()}, "
         f"not {task.name!r}")
    rule(not d.topk or task.token_level, "distill.topk",
         f"the top-k cache is for token-level distillation ({_token_level()}), not {task.name!r}")
    rule(not d.teacher_offsets or (task.teacher_offsets and d.enabled), "distill.teacher_offsets",
         f"per-example teacher offsets need distill.teacher and a task whose inputs attach them "
         f"({tuple(n for n, t in _REGISTRY.items() if t.teacher_offsets)})")
    if task.rules is not None:
        task.rules(config)
    return task


def _token_level() -> tuple[str, ...]:
    return tuple(n for n, t in _REGISTRY.items() if t.token_level)


from memgpt_jax.tasks import builtin  # noqa: E402,F401  (registers the built-in tasks)

__all__ = ["Task", "accepting", "check", "get", "names", "register", "require"]
