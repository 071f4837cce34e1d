"""The dataset builders by tfds name, and what a prepared dataset says about itself.

Code above the data layer asks here instead of keeping tables of dataset names: how
to prepare a dataset that is missing (each builder's ``PREPARE``) and the names of a
dataset's labels (stored in its metadata when prepared; builders declare
``LABEL_NAMES``, which also serve data prepared before they were stored; else the
``label`` feature's class names).
"""

from __future__ import annotations

from typing import Any

from memgpt_jax.data.aeslc import MemgptAeslc
from memgpt_jax.data.dialogue import MemgptDialogue
from memgpt_jax.data.imdb import MemgptImdb
from memgpt_jax.data.listops import MemgptListops
from memgpt_jax.data.pairs import MemgptPairs
from memgpt_jax.data.prepared import DataError, prepared_dir
from memgpt_jax.data.squad import MemgptSquad
from memgpt_jax.data.text_corpus import MemgptText

BUILDERS = {cls.name: cls for cls in (MemgptAeslc, MemgptDialogue, MemgptImdb, MemgptListops, MemgptPairs,
                                      MemgptSquad, MemgptText)}


def prepare_arguments(name: str) -> str | None:
    """The ``memgpt-jax data prepare`` arguments that build ``name`` (``builder/config``),
    or ``None`` when no builder here makes it."""
    builder, _, config = name.partition("/")
    cls = BUILDERS.get(builder)
    return cls.PREPARE.format(config=config) if cls is not None and cls.PREPARE else None


def pipeline_of(name: str) -> str | None:
    """The ``data.dataset`` (pipeline) that reads the prepared dataset ``name``, if known here."""
    cls = BUILDERS.get(name.partition("/")[0])
    return (cls.PIPELINE or None) if cls is not None else None


def label_names(name: str, data_dir: str | None = None) -> tuple[str, ...]:
    """The label names of the prepared dataset ``name``; ``()`` when it has none or is not here."""
    import tensorflow_datasets as tfds

    try:
        info = tfds.builder_from_directory(prepared_dir(name, data_dir)).info
    except (DataError, OSError, ValueError):
        return ()
    names: Any = (info.metadata or {}).get("label_names")
    cls = BUILDERS.get(name.split("/")[0])
    if not names and cls is not None:  # prepared before its builder stored them
        names = cls.LABEL_NAMES
    if not names and "label" in info.features and hasattr(info.features["label"], "names"):
        names = info.features["label"].names
    return tuple(names or ())
