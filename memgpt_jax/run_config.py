"""The run configuration: one typed, frozen, validated description of a whole run.

Every default a run uses is defined once, here (the architecture's in
:class:`~memgpt_jax.config.ModelConfig`). Config files (``configs/*.py``) start
from :func:`defaults`, override only what differs and return the ConfigDict;
:func:`load` applies command-line overrides through ml_collections' own
``config_flags`` and turns the result into a :class:`RunConfig` once::

    config = run_config.load("configs/imdb.py:teacher", ["--config.train.steps=100"])
    config.train.steps, config.optim.lr, config.model.attention.pattern

Library code reads attributes; a bad value fails when the config is built, with
one line naming the field (``train.steps: must be > 0, got -5``). Saved runs store
``RunConfig.to_dict()``; :meth:`RunConfig.from_saved` also reads the configs of
runs written before this module existed.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import glob
import importlib.util
import json
import os
import re
import types
import typing
from typing import Any, Callable, Iterable, Mapping, Sequence

import ml_collections
from absl import flags
from ml_collections import config_dict, config_flags

from memgpt_jax import config as model_config
from memgpt_jax.config import AttentionConfig, ModelConfig

DATASETS = ("listops", "imdb", "text", "squad", "pairs")
SCHEDULES = ("cosine", "linear", "constant", "inverse_sqrt")
KD_KINDS = ("forward_kl", "reverse_kl", "jsd", "mse")
HIDDEN_KINDS = ("cosine", "mse")
PARALLEL = ("pjit", "pmap")
PRUNE_KINDS = ("none", "global", "layer", "2:4")  # compress.prune.KINDS and "none"


class ConfigError(ValueError):
    """A bad configuration value; the message is one line that names the field."""


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field}: {message}")


def _positive(section: str, obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _check(value > 0, f"{section}.{name}", f"must be > 0, got {value!r}")


def _non_negative(section: str, obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _check(value >= 0, f"{section}.{name}", f"must be >= 0, got {value!r}")


def _choice(field: str, value: Any, allowed: Sequence[Any]) -> None:
    _check(value in allowed, field, f"unknown value {value!r}; choose one of {tuple(allowed)}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where examples come from and how they are batched.

    ``dataset`` picks the pipeline (``pairs``: prompt -> target language modelling,
    the loss on targets only); ``name`` is the prepared tfds dataset
    (``memgpt_imdb/val10_seed0``); ``data_dir`` where prepared datasets live
    (``None``: ``$MEMGPT_DATA_DIR``). ``listops`` holds ListOps generator settings
    (``preset`` plus overrides of :func:`memgpt_jax.data.listops_config`); when
    set, the dataset name is derived from them and the data is generated on first use.
    """

    dataset: str = "listops"
    name: str = ""
    data_dir: str | None = None
    tokenizer: str = "listops"  # "listops", "bytes" or a sentencepiece .model path
    listops: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    train_split: str = "train"
    eval_split: str = "validation"  # "" = no periodic evaluation data
    text_key: str = "text"
    seq_len: int = 128
    batch_size: int = 32
    eval_batch_size: int = 32
    eval_batches: int = 0  # 0 = the whole split
    seed: int = 0
    pack: bool = True  # pairs: several pairs per row
    prompt_loss: bool = False  # pairs: the loss counts the prompt's tokens too (in-domain LM training
    #   on the prompts, e.g. emails, before a target-only fine-tune); False: target tokens only
    multi_turn: bool = False  # pairs whose prompts are rendered chats: earlier replies read as
    #   [SEP] reply [EOS] and trained on too, each conversation once, from its last turn
    #   (data/pairs_pipeline.py); decoding and chat read the run's prompts the same way
    doc_stride: int = 128  # qa: overlap of the windows over a long context
    length_buckets: tuple[int, ...] = ()  # classification training: row lengths a batch pads to (its
    #   longest text decides; texts sorted by length in pools of 16 batches); () = always seq_len
    truncate: str = "auto"  # what a too-long text keeps: "head", "tail" or "head+tail" ("auto":
    #   a classified text its head, a prompt -> target prompt its tail, the latest turns)
    label_names: tuple[str, ...] = ()  # classification: names of the labels (index = id)

    def __post_init__(self) -> None:
        _choice("data.dataset", self.dataset, DATASETS)
        _choice("data.truncate", self.truncate, ("auto", "head", "tail", "head+tail"))
        object.__setattr__(self, "length_buckets", tuple(int(n) for n in self.length_buckets))
        _check(all(0 < n <= self.seq_len for n in self.length_buckets), "data.length_buckets",
               f"each must be in (0, seq_len={self.seq_len}], got {self.length_buckets}")
        _positive("data", self, "seq_len", "batch_size", "eval_batch_size", "doc_stride")
        _non_negative("data", self, "eval_batches")
        _check(not (self.multi_turn and self.prompt_loss), "data.multi_turn",
               "trains on the replies only; it cannot be combined with data.prompt_loss")
        object.__setattr__(self, "listops", dict(self.listops))
        object.__setattr__(self, "label_names", tuple(self.label_names))

    def kept(self) -> str:
        """What a too-long text keeps ("head", "tail" or "head+tail"), ``auto`` resolved."""
        if self.truncate != "auto":
            return self.truncate
        return "tail" if self.dataset == "pairs" else "head"


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with global-norm clipping and a warmup schedule (``training/optim.py``)."""

    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 100
    total_steps: int = 0  # 0 = train.steps
    end_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 = no clipping
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-8
    layer_decay: float = 1.0  # fine-tuning: block i's rate is lr * layer_decay ** (n_layers - i); 1 = off

    def __post_init__(self) -> None:
        _choice("optim.schedule", self.schedule, SCHEDULES)
        _positive("optim", self, "lr", "eps")
        _check(0.0 < self.layer_decay <= 1.0, "optim.layer_decay", f"must be in (0, 1], got {self.layer_decay!r}")
        _non_negative("optim", self, "warmup_steps", "total_steps", "end_lr_ratio", "weight_decay", "grad_clip")
        for name in ("b1", "b2"):
            value = getattr(self, name)
            _check(0.0 <= value < 1.0, f"optim.{name}", f"must be in [0, 1), got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Steps, parallelism, logging and checkpointing of the training loop."""

    steps: int = 1000
    accum_steps: int = 1  # micro-batches per step (gradient accumulation)
    seed: int = 0
    parallel: str = "pjit"  # "pjit": jit over a device mesh; "pmap": data parallel over local devices
    mesh: tuple[int, ...] = (-1, 1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices
    log_every: int = 50
    eval_every: int = 0  # 0 = no periodic evaluation
    checkpoint_every: int = 500
    keep: int = 3  # checkpoints kept
    keep_period: int = 0  # also keep every checkpoint whose step is a multiple of this (0 = off)
    async_checkpoint: bool = True
    init_from: str = ""  # a run whose parameters (all, or the transformer) start this one
    init_step: int = 0  # which checkpoint of init_from (0 = its newest)
    prune_kind: str = "none"  # recovery fine-tuning of a magnitude-pruned model
    prune_sparsity: float = 0.5
    label_smoothing: float = 0.0  # classification: the hard labels mixed with the uniform distribution

    def __post_init__(self) -> None:
        object.__setattr__(self, "mesh", tuple(int(n) for n in self.mesh))
        _positive("train", self, "steps", "accum_steps", "log_every", "checkpoint_every", "keep")
        _non_negative("train", self, "eval_every", "keep_period", "init_step")
        _choice("train.parallel", self.parallel, PARALLEL)
        _choice("train.prune_kind", self.prune_kind, PRUNE_KINDS)
        _check(len(self.mesh) == 3 and self.mesh.count(-1) <= 1 and all(n == -1 or n > 0 for n in self.mesh),
               "train.mesh", f"needs three axis sizes (data, fsdp, tensor), at most one -1, got {self.mesh}")
        _check(0.0 <= self.prune_sparsity < 1.0, "train.prune_sparsity",
               f"must be in [0, 1), got {self.prune_sparsity!r}")
        _check(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing",
               f"must be in [0, 1), got {self.label_smoothing!r}")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """How a student learns from a teacher run (``training/losses.py``); off when ``teacher`` is empty."""

    teacher: str = ""  # the teacher's run directory; several, comma-separated: an ensemble (probabilities averaged)
    kind: str = "forward_kl"
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the distillation term; 1 - alpha on the hard labels
    beta: float = 0.5  # JSD mixture weight
    hidden_weight: float = 0.0  # hidden-state alignment (0 = off)
    hidden_kind: str = "cosine"
    attention_weight: float = 0.0  # attention-map transfer (0 = off)
    init_from_teacher: bool = False  # start from every other teacher layer (DistilBERT)
    topk: int = 0  # token-level tasks: distill from cached teacher top-k logits (0 = run the teacher)
    # the teacher-logit transform (training/steps.teacher_logits): an .npz whose `offsets`
    # [N, num_labels] are added to the teacher's logits (first multiplied by its `teacher_scale`)
    # for each of the N training examples, in the training split's order (a teacher stacked with
    # another model whose part was computed ahead); for tasks whose inputs attach them
    teacher_offsets: str = ""

    def __post_init__(self) -> None:
        _choice("distill.kind", self.kind, KD_KINDS)
        _choice("distill.hidden_kind", self.hidden_kind, HIDDEN_KINDS)
        _positive("distill", self, "temperature")
        _non_negative("distill", self, "hidden_weight", "attention_weight", "topk")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"distill.{name}", f"must be in [0, 1], got {value!r}")
        _check(not self.topk or (not self.hidden_weight and not self.attention_weight and self.kind == "forward_kl"),
               "distill.topk", "cached top-k logits support forward_kl only, without hidden or attention terms "
               "(those need the teacher running)")

    @property
    def enabled(self) -> bool:
        return bool(self.teacher)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run needs: the task (a name in the registry, ``memgpt_jax.tasks``), the model,
    and each section."""

    task: str = "lm"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        # The task's name and its own rules are checked where the config meets the task
        # registry (memgpt_jax.tasks.check: training, opening a run, the train commands),
        # which sits above this module.
        _check(bool(self.task), "task", "must name a task (memgpt_jax.tasks.names())")
        _check(self.data.seq_len <= self.model.max_len, "data.seq_len",
               f"{self.data.seq_len} exceeds model.max_len={self.model.max_len}")

    # -- conversion --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **sections: Mapping[str, Any]) -> "RunConfig":
        """A copy with fields of sections changed: ``config.replace(train={"steps": 5})``."""
        data = self.to_dict()
        for section, changes in sections.items():
            if section == "model" and isinstance(changes, Mapping):
                changes = model_config.fresh_layout(changes)
            if isinstance(changes, Mapping):
                data[section] = _merge(data[section], changes)
            else:
                data[section] = changes
        return RunConfig.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        """Builds and validates; unknown fields fail with the field's name."""
        return _build(cls, data, "")

    @classmethod
    def from_saved(cls, data: Mapping[str, Any]) -> "RunConfig":
        """Reads the config saved with a run, including runs written by older
        versions (renamed attention values are upgraded)."""
        data = json.loads(json.dumps(dict(data)))  # a deep, plain copy
        # Runs imported before the data section was saved name no tokenizer: never guess one.
        data.setdefault("data", {"tokenizer": ""})
        model = data.get("model")
        if isinstance(model, dict) and isinstance(model.get("attention"), dict):
            model["attention"], _ = model_config.upgrade_attention_dict(model["attention"])
        return cls.from_dict(data)


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and key != "listops":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a section (mapping), got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{prefix}{key}: unknown field{_suggestion(key, fields)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = value if isinstance(value, hint) else _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(f"{prefix}{key}", value, hint)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:  # ModelConfig/AttentionConfig name their fields relative to the model
        raise ConfigError(f"{prefix.split('.')[0]}.{e}" if prefix else str(e)) from None


def _coerce(field: str, value: Any, hint: Any) -> Any:
    """Checks a value against its field's type; ints are accepted for floats, lists for tuples."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _coerce(field, value, hint)
    if origin is tuple:
        _check(isinstance(value, (list, tuple)), field, f"expected a sequence, got {value!r}")
        return tuple(_coerce(field, v, args[0]) for v in value)
    if origin in (collections.abc.Mapping, dict) or hint is dict:
        _check(isinstance(value, Mapping), field, f"expected a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any:
        return value
    ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    _check(ok, field, f"expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


# -- config files ------------------------------------------------------------------------

def defaults(task: str = "lm"):
    """The defaults of every section as an ml_collections ``ConfigDict``: what a config
    file starts from (``config = run_config.defaults("classification")``) and overrides.
    Optional fields become typed placeholders, so command-line overrides parse them."""
    return ml_collections.ConfigDict(_config_tree(RunConfig(task=task)))


def _config_tree(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    tree: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            tree[f.name] = _config_tree(value)
        elif value is None:
            (inner,) = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
            tree[f.name] = config_dict.placeholder(inner)
        else:
            tree[f.name] = value
    return tree


def _shipped_configs() -> str:
    """The ``configs/`` folder that came with this installation: ``memgpt_jax/configs`` in a
    wheel (setup.cfg maps the repository's ``configs/`` there), the checkout's own ``configs/``
    in an editable install (the package folder is then the checkout's ``memgpt_jax/``)."""
    package = os.path.dirname(os.path.abspath(__file__))
    inside = os.path.join(package, "configs")
    return inside if os.path.isdir(inside) else os.path.join(os.path.dirname(package), "configs")


def _config_file(path: str) -> str:
    """``path`` itself when it exists; else, for ``configs/NAME.py``, the installed copy, so
    the documented commands work from any directory; else a :class:`ConfigError` that lists
    the available configs."""
    if os.path.isfile(path):
        return path
    shipped = _shipped_configs()
    folder, name = os.path.split(os.path.normpath(path))
    if folder == "configs" and os.path.isfile(os.path.join(shipped, name)):
        return os.path.join(shipped, name)
    available = ", ".join(f"configs/{f}" for f in sorted(glob.glob("[!_]*.py", root_dir=shipped))) or "none"
    raise ConfigError(f"config file {path!r} not found; available: {available}")


def load(spec: str, overrides: Sequence[str] = ()) -> RunConfig:
    """Loads ``configs/x.py`` or ``configs/x.py:variant``, applies ``--config.a.b=value``
    overrides (ml_collections ``config_flags``: typed parsing, "did you mean"), and
    returns the validated :class:`RunConfig`. Every failure is a :class:`ConfigError`.
    ``configs/x.py`` is the current directory's when it has one, else the installed copy."""
    path, sep, variant = spec.partition(":")
    spec = _config_file(path) + sep + variant
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise ConfigError(f"override {item!r} must look like --config.section.field=value")
    argv = ["memgpt-jax", f"--config={spec}", *overrides]
    holder = flags.FlagValues()
    config_flags.DEFINE_config_file("config", default=None, flag_values=holder, lock_config=True, sys_argv=argv)
    try:
        holder(argv)
        as_dict = holder.config.to_dict()
    except flags.Error as e:  # a value that does not parse, or an error raised by the config file
        raise ConfigError(f"{spec}: {_last_line(str(e))}") from None
    except (AttributeError, KeyError) as e:  # an unknown field
        raise ConfigError(_unknown_field(overrides, e)) from None
    return RunConfig.from_dict(as_dict)


def runs_path(*parts: str) -> str:
    """A path under the runs root, ``$MEMGPT_RUNS`` (unset or empty: ``runs``, relative to the
    working directory): config files name the runs they start from (a backbone, a teacher, a
    tokenizer) with it, so one variable moves a recipe's runs, and the recipe scripts use the
    same root (``${MEMGPT_RUNS:-runs}``)."""
    return os.path.join(os.environ.get("MEMGPT_RUNS") or "runs", *parts)


def variant_table(base: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]] | None = None,
                  default: str | None = None) -> Callable[..., ml_collections.ConfigDict]:
    """A config file's ``get_config`` from a table, so its variants read as what differs::

        BASE = dict(task="classification", model=dict(d_model=256), train=dict(steps=500))
        VARIANTS = {"student": dict(model=dict(d_model=128)),
                    "student_more": dict(based_on="student", train=dict(steps=1000))}
        get_config = run_config.variant_table(BASE, VARIANTS, default="student")

    ``base`` overrides :func:`defaults` (``task`` included); a variant overrides ``base``, or
    with ``based_on`` another variant (nested sections merge, other values replace; a
    ``data.listops`` is replaced whole). ``default`` is what a spec without ``:VARIANT``
    loads (the base itself when the table is empty). A ``based_on`` naming no variant, or
    a cycle of them, fails when the file loads, whichever variant is asked for."""
    variants = dict(variants or {})

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        if name in chain:
            raise ValueError(f"variant {chain[0]!r}: based_on cycle {' -> '.join((*chain, name))}")
        own = dict(variants[name])
        parent = own.pop("based_on", None)
        if parent is not None and parent not in variants:
            raise ValueError(f"variant {name!r}: based_on unknown variant {parent!r}")
        return _merge(dict(base) if parent is None else resolve(parent, (*chain, name)), own)

    tables = {name: resolve(name, ()) for name in variants}
    if tables and default not in tables:
        raise ValueError(f"default variant {default!r} not in {tuple(tables)}")

    def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
        variant = default if variant is None else variant
        if variant is not None and variant not in tables:
            raise ValueError(f"unknown variant {variant!r}; choose one of {tuple(tables)}")
        config = defaults()
        config.update(base if variant is None else tables[variant])
        return config

    return get_config


def model_of(spec: str) -> dict[str, Any]:
    """The model section of another config (``FILE:VARIANT``), as a dict: a recipe whose
    backbone is another recipe's keeps one source of truth for its shape. The file runs in a
    module of its own: config_flags loads every config file under one module name, so a
    config calling this while it loads would see its globals replaced by the other file's."""
    path, sep, variant = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("memgpt_jax_model_of", _config_file(path))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(variant) if sep else module.get_config()
    return RunConfig.from_dict(config.to_dict()).model.to_dict()


def _last_line(message: str) -> str:
    """The line that says what went wrong (the config file's own exception, not the traceback)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    line = lines[-1] if "Traceback" in message else " ".join(lines)
    return re.sub(r"^(ValueError|KeyError|TypeError): ", "", line)  # the message, not the exception's class


# Names other libraries use for our fields (Hugging Face, optax, flax examples): an
# unknown field that is one of these is pointed at ours.
ALIASES = {
    "learning_rate": "lr", "lr_schedule": "schedule", "warmup": "warmup_steps", "wd": "weight_decay",
    "beta1": "b1", "beta2": "b2", "adam_beta1": "b1", "adam_beta2": "b2", "epsilon": "eps", "adam_epsilon": "eps",
    "max_grad_norm": "grad_clip", "clip": "grad_clip", "clip_grad_norm": "grad_clip",
    "num_steps": "steps", "max_steps": "steps", "train_steps": "steps", "gradient_accumulation_steps": "accum_steps",
    "batch": "batch_size", "per_device_train_batch_size": "batch_size", "seq_length": "seq_len",
    "max_seq_len": "seq_len", "max_seq_length": "seq_len", "block_size": "seq_len",
    "num_layers": "n_layers", "n_layer": "n_layers", "num_hidden_layers": "n_layers", "num_heads": "n_heads",
    "n_head": "n_heads", "num_attention_heads": "n_heads", "hidden_size": "d_model", "n_embd": "d_model",
    "dim": "d_model", "emb_dim": "d_model", "intermediate_size": "d_ff", "mlp_dim": "d_ff", "vocab": "vocab_size",
    "max_position_embeddings": "max_len", "n_positions": "max_len", "max_length": "max_len", "dtype": "compute_dtype",
    "temp": "temperature", "teacher_path": "teacher", "kd_weight": "alpha",
}


def _suggestion(key: str, fields: Iterable[str]) -> str:
    """``; did you mean 'lr'?`` for a mistyped or foreign field name, else the fields there are."""
    fields = list(fields)
    alias = ALIASES.get(key)
    close = [alias] if alias in fields else difflib.get_close_matches(key, fields, n=1)
    return f"; did you mean {close[0]!r}?" if close else f" (have {sorted(fields)})"


def _section_fields(path: Sequence[str]) -> list[str] | None:
    """The field names of the config section at ``path`` (``["optim"]``), if it is one."""
    cls: Any = RunConfig
    for name in path:
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        cls = hints.get(name)
        if cls is None or not dataclasses.is_dataclass(cls):
            return None
    return [f.name for f in dataclasses.fields(cls)]


def _unknown_field(overrides: Sequence[str], error: Exception) -> str:
    """``train.stepz: unknown field; did you mean 'steps'?`` from ml_collections' message."""
    text = str(error)
    names = re.findall(r"\w+", text)
    missing = names[0] if names else "config"
    field = next((o.split("=", 1)[0][len("--config."):] for o in overrides
                  if o.split("=", 1)[0].split(".")[-1] == missing), missing)
    fields = _section_fields(field.split(".")[:-1])
    if fields is not None:
        return f"{field}: unknown field{_suggestion(field.split('.')[-1], fields)}"
    match = re.search(r'Did you mean "([^"]+)"', text)
    return f"{field}: unknown field" + (f"; did you mean {match.group(1)!r}?" if match else "")


__all__ = [
    "AttentionConfig", "ConfigError", "DataConfig", "DistillConfig", "ModelConfig", "OptimConfig", "RunConfig",
    "TrainConfig", "defaults", "load", "model_of", "runs_path", "variant_table",
]
