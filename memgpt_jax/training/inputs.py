"""From a run config's ``data`` section to the iterators the loop and the evaluators consume.

The fields are documented on :class:`memgpt_jax.run_config.DataConfig`. ListOps is
generated on first use; IMDb, text corpora, pairs and SQuAD must be prepared first
(``memgpt-jax data prepare ...``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from memgpt_jax import data as data_lib
from memgpt_jax import tasks
from memgpt_jax.run_config import DataConfig, RunConfig


@dataclasses.dataclass
class DataBundle:
    train: Any  # iterator with get_state()/set_state()
    eval: Callable[[], Iterable[dict]] | None
    tokenizer: Any
    tokenizer_bytes: bytes | None


def dataset_name(dc: DataConfig) -> str:
    """The prepared dataset's name; for ListOps derived from ``listops`` settings."""
    if dc.dataset == "listops" and dc.listops:
        settings = dict(dc.listops)
        preset = settings.pop("preset", "tiny")
        return "memgpt_listops/" + data_lib.listops_config(preset, **settings).name
    return dc.name


def load_source(dc: DataConfig, split: str, *, generate: bool = False):
    """The records of ``split`` from ``dc.data_dir``. ``generate``: ListOps is generated
    there on first use (training does this; evaluating a saved run never does)."""
    name = dataset_name(dc)
    if not name:  # an imported model: its run config names no data
        raise data_lib.DataError("this run names no dataset (an imported model has none): give a prepared one "
                                 "with --dataset NAME (e.g. memgpt_listops/tiny) and, if it is not in the "
                                 f"default place, --data-dir DIR; the split with --split")
    try:
        return data_lib.load_split(name, split, dc.data_dir)
    except data_lib.DamagedDataError as e:
        raise data_lib.DataError(f"{name}: {e}; delete that directory and prepare it again with: "
                                 f"{prepare_command(dc)}") from None
    except data_lib.DataError as e:
        if not (generate and dc.dataset == "listops"):
            if "no prepared dataset" in str(e):
                raise data_lib.DataError(f"{name} is not prepared in {data_lib.resolve_data_dir(dc.data_dir)}; "
                                         f"prepare it with: {prepare_command(dc)}") from None
            raise
    settings = dict(dc.listops)
    preset = settings.pop("preset", name.split("/", 1)[-1])
    data_lib.prepare(data_lib.listops_builder(preset, data_dir=dc.data_dir, **settings))
    return data_lib.load_split(name, split, dc.data_dir)


def prepare_command(dc: DataConfig) -> str:
    """The command that prepares the data of ``dc`` where it is looked for."""
    where = f"--data-dir {data_lib.resolve_data_dir(dc.data_dir)}"
    if dc.dataset == "listops":
        settings = dict(dc.listops) or {"preset": dc.name.split("/", 1)[-1]}
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items())
        return f"memgpt-jax data prepare listops {flags} {where}"
    kind = data_lib.prepare_arguments(dc.name) or f"... (no builder here makes {dc.name})"
    return f"memgpt-jax data prepare {kind} {where} (see its --help)"


def make_iterator(config: RunConfig, split: str, tokenizer: Any, *, train: bool, batch_size: int,
                  generate: bool = False):
    """The task's input pipeline over ``split`` (see :class:`memgpt_jax.tasks.Task` ``inputs``)."""
    dc, task = config.data, tasks.get(config.task)
    source = load_source(dc, split, generate=generate)
    common = dict(batch_size=batch_size, seed=dc.seed, shuffle=train, num_epochs=None if train else 1,
                  drop_remainder=train)
    offsets = None
    if train and config.distill.teacher_offsets:
        offsets = load_teacher_offsets(config.distill.teacher_offsets, len(source), config.model.num_labels, split)
    return task.inputs(config, source, tokenizer, train=train, teacher_offsets=offsets, **common)


def load_teacher_offsets(path: str, records: int, num_labels: int, split: str) -> tuple[np.ndarray, float]:
    """``(offsets [records, num_labels], teacher_scale)`` of ``distill.teacher_offsets``, checked
    against the training split it must line up with (one row per record, in its order).

    The file is the teacher-logit transform's input (``training/steps.teacher_logits``): an
    ``.npz`` with ``offsets``, ``teacher_scale`` and optionally the ``split`` it was written
    for; whatever computes a teacher's other part per record (a stacked model, say) writes it."""
    if not os.path.isfile(path):
        raise data_lib.DataError(f"distill.teacher_offsets: no file {path} (an .npz of offsets [records, labels] "
                                 "and teacher_scale)")
    with np.load(path) as f:
        missing = {"offsets", "teacher_scale"} - set(f.files)
        if missing:
            raise data_lib.DataError(f"distill.teacher_offsets: {path} lacks {sorted(missing)}")
        offsets, scale = np.asarray(f["offsets"], np.float32), float(f["teacher_scale"])
        written_for = str(f["split"]) if "split" in f.files else None
    if written_for is not None and written_for != split:
        raise data_lib.DataError(f"distill.teacher_offsets: {path} was written for split {written_for!r}, "
                                 f"the run trains on {split!r}")
    if offsets.shape != (records, num_labels):
        raise data_lib.DataError(f"distill.teacher_offsets: {path} holds offsets of shape {offsets.shape}; the "
                                 f"training split {split!r} needs ({records}, {num_labels})")
    if not np.all(np.isfinite(offsets)) or not np.isfinite(scale):
        raise data_lib.DataError(f"distill.teacher_offsets: {path} holds non-finite values")
    return offsets, scale


def eval_batches(config: RunConfig, tokenizer: Any) -> Iterator[dict]:
    """The batches of the config's eval split (``eval_batches`` of them; 0 = all)."""
    dc = config.data
    it = make_iterator(config, dc.eval_split, tokenizer, train=False, batch_size=dc.eval_batch_size)
    return itertools.islice(it, dc.eval_batches) if dc.eval_batches > 0 else iter(it)


def make_data(config: RunConfig) -> DataBundle:
    """The training iterator (ListOps generated on first use) and the eval batches."""
    tokenizer = data_lib.load_tokenizer(config.data.tokenizer)
    vocab = config.model.vocab_size
    if tokenizer.vocab_size > vocab:
        raise ValueError(f"model.vocab_size={vocab} is smaller than the tokenizer's {tokenizer.vocab_size}")
    train_iter = make_iterator(config, config.data.train_split, tokenizer, train=True,
                               batch_size=config.data.batch_size, generate=True)
    blob = json.dumps(tokenizer.to_config()).encode()
    return DataBundle(train=train_iter, eval=(lambda: eval_batches(config, tokenizer)) if config.data.eval_split else None,
                      tokenizer=tokenizer, tokenizer_bytes=blob)
