"""IMDb reviews (Maas et al., 2011) as a tfds builder, from the official ``aclImdb`` layout.

Source: a ``.tar.gz`` (the official ``aclImdb_v1.tar.gz`` or any archive with the
same layout, e.g. the dev sample in ``shared/data``), or an extracted directory
(``.../aclImdb`` or its parent). Given by ``source=`` / ``--source``, else
``$MEMGPT_IMDB_SOURCE``; with ``download=True`` (``--download``) and neither set,
the official URL is fetched. Nothing is downloaded unless asked.

Splits and features follow tfds ``imdb_reviews`` (``text``, ``label`` with
``neg``=0 / ``pos``=1, and -1 for unlabeled reviews), plus ``rating`` (the
1-10 star rating from ``<id>_<rating>.txt``; 0 for ``unsup``) and ``id`` (the
file's path inside ``aclImdb/``):

- ``validation``: a seeded, stratified carve-out of ``aclImdb/train``: for each
  label, the file ids are sorted and permuted by ``numpy.random.default_rng
  ([seed, label])``; the first ``round(n_label * validation_percent / 100)``
  go to validation. The choice depends only on the ids, the percent and the
  seed, never on archive order. (Default 10 %: 1,250 pos + 1,250 neg.)
- ``train``: the rest of ``aclImdb/train/{pos,neg}`` (``train+validation`` is
  the full official train split).
- ``test``: whatever ``aclImdb/test/{pos,neg}`` holds (the full official test
  set, or the 2,000-review sample of the dev archive: report it as a "test sample").
- ``unsupervised``: ``aclImdb/train/unsup``.

Empty reviews are skipped and invalid UTF-8 is replaced (U+FFFD); both are
counted per split in the report that ``prepare`` prints and tfds stores.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tarfile
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from memgpt_jax.data.prepared import DataError, ReportingBuilder, config_arg

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SOURCE_ENV = "MEMGPT_IMDB_SOURCE"
LABELS = ("neg", "pos")
# (split directory, label directory) -> tfds split; train/pos+neg feed two splits.
GROUPS = (("train", "neg"), ("train", "pos"), ("test", "neg"), ("test", "pos"), ("train", "unsup"))
_REVIEW = re.compile(r"(?:^|/)(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")
_IN_GROUP = re.compile(r"(?:^|/)(train|test)/(pos|neg|unsup)/[^/]+$")
_RATINGS = {"neg": range(1, 5), "pos": range(7, 11), "unsup": range(0, 1)}

HOW_TO_PROVIDE = (
    "Provide the IMDb data in the official aclImdb layout as a .tar.gz or an extracted "
    f"directory with --source PATH (or ${IMDB_SOURCE_ENV}=PATH), or pass --download "
    f"to fetch {IMDB_URL} when online."
)


@dataclasses.dataclass(frozen=True)
class Review:
    path: str  # relative to aclImdb/, e.g. "train/pos/123_9.txt"
    file_id: int
    rating: int
    raw: bytes


def read_aclimdb(source: str) -> tuple[dict[tuple[str, str], list[Review]], list[str]]:
    """All reviews of an aclImdb archive or directory, grouped by (split, label).

    Returns the groups and the paths of files inside a review directory whose
    names do not follow ``<id>_<rating>.txt`` (they are reported, not read).
    Raises :class:`DataError` naming ``source`` if it is missing or unreadable.
    """
    if not os.path.exists(source):
        raise DataError(f"IMDb source {source!r} does not exist. {HOW_TO_PROVIDE}")
    groups: dict[tuple[str, str], list[Review]] = {g: [] for g in GROUPS}
    odd: list[str] = []

    def add(name: str, read) -> None:
        match = _REVIEW.search(name)
        if match is None:
            if _IN_GROUP.search(name):
                odd.append(name)
            return
        split, label, file_id, rating = match.groups()
        if (split, label) not in groups:  # e.g. test/unsup: not part of the layout
            odd.append(name)
            return
        rel = f"{split}/{label}/{file_id}_{rating}.txt"
        groups[(split, label)].append(Review(rel, int(file_id), int(rating), read()))

    if os.path.isdir(source):
        for root, _, files in os.walk(source):
            for fname in files:
                full = os.path.join(root, fname)
                rel = os.path.relpath(full, source).replace(os.sep, "/")

                def read(full=full) -> bytes:
                    with open(full, "rb") as f:
                        return f.read()

                add(rel, read)
    else:
        try:
            with tarfile.open(source, "r:*") as archive:
                for member in archive:
                    if member.isfile():
                        add(member.name, lambda m=member: archive.extractfile(m).read())
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(
                f"could not read IMDb source {source!r} as a tar archive ({err}). {HOW_TO_PROVIDE}"
            ) from err
    missing = [f"aclImdb/{s}/{l}" for (s, l), rows in groups.items() if not rows]
    if missing:
        present = [f"aclImdb/{s}/{l} ({len(r):,})" for (s, l), r in groups.items() if r]
        raise DataError(
            f"IMDb source {source!r} is missing {', '.join(missing)} "
            f"(found: {', '.join(present) or 'no reviews at all'}). {HOW_TO_PROVIDE}"
        )
    return groups, sorted(odd)


def validation_ids(ids: list[int], label: int, percent: int, seed: int) -> set[int]:
    """The file ids of one label that go to validation (seeded, order-independent)."""
    ordered = np.array(sorted(ids), dtype=np.int64)
    n_val = int(round(len(ordered) * percent / 100))
    perm = np.random.default_rng([seed, label]).permutation(len(ordered))
    return set(ordered[perm[:n_val]].tolist())


@dataclasses.dataclass
class ImdbConfig(tfds.core.BuilderConfig):
    """``validation_percent`` of each train label, chosen with ``seed``."""

    validation_percent: int = 10
    seed: int = 0


def imdb_config(validation_percent: int = 10, seed: int = 0) -> ImdbConfig:
    if not 0 < validation_percent < 100:
        raise ValueError(f"validation_percent must be in 1..99, got {validation_percent}")
    return ImdbConfig(
        name=f"val{validation_percent}_seed{seed}",
        description=f"{validation_percent}% of train per label held out as validation (seed {seed})",
        validation_percent=validation_percent,
        seed=seed,
    )


class MemgptImdb(ReportingBuilder):
    """IMDb reviews from a local aclImdb archive/directory or the official URL."""

    PREPARE = "imdb --source ACLIMDB.tar.gz"

    PIPELINE = "imdb"  # the data.dataset that reads it
    LABEL_NAMES = ("negative", "positive")  # what a classifier of these reviews prints

    BUILDER_CONFIGS = [imdb_config(10, 0)]

    def __init__(self, *, source: str | None = None, download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source = source
        self._download = download

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="IMDb movie reviews (aclImdb v1) with a stratified validation split.",
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=list(LABELS)),
                "rating": np.int32,
                "id": tfds.features.Text(),
            }),
            supervised_keys=("text", "label"),
            homepage="https://ai.stanford.edu/~amaas/data/sentiment/",
            metadata=self._metadata(),
        )

    def _locate_source(self, dl_manager) -> str:
        source = self._source or os.environ.get(IMDB_SOURCE_ENV)
        if source:
            return os.path.abspath(os.path.expanduser(source))
        if self._download:
            try:
                return os.fspath(dl_manager.download(IMDB_URL))
            except Exception as err:  # network errors come in many types
                raise DataError(f"downloading {IMDB_URL} failed ({err}). {HOW_TO_PROVIDE}") from err
        raise DataError(
            f"no IMDb source: --source/source= not given, ${IMDB_SOURCE_ENV} not set, "
            f"and downloading not requested. {HOW_TO_PROVIDE}"
        )

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        source = self._locate_source(dl_manager)
        print(f"reading IMDb reviews from {source} ...", flush=True)
        groups, odd = read_aclimdb(source)
        cfg = self.builder_config
        held_out = {
            label: validation_ids([r.file_id for r in groups[("train", name)]], label,
                                  cfg.validation_percent, cfg.seed)
            for label, name in enumerate(LABELS)
        }
        self.report.update(
            empty_reviews_skipped={},
            invalid_utf8_replaced={},
            source=source,
            train_before_validation={name: len(groups[("train", name)]) for name in LABELS},
            validation_held_out={name: len(held_out[i]) for i, name in enumerate(LABELS)},
        )
        for label, name in enumerate(LABELS):
            kept = len(groups[("train", name)]) - len(held_out[label])
            if not held_out[label] or not kept:
                raise DataError(
                    f"{len(groups[('train', name)])} train/{name} reviews in {source} cannot be split "
                    f"{100 - cfg.validation_percent}/{cfg.validation_percent} into train and validation; "
                    "change --validation-percent or provide more reviews"
                )
        if odd:
            self.report["unexpected_files_ignored"] = len(odd)
            self.report["unexpected_files_examples"] = ", ".join(odd[:5])
        self.info.metadata["report"] = self.report

        def train_rows(keep_validation: bool):
            for label, name in enumerate(LABELS):
                for review in groups[("train", name)]:
                    if (review.file_id in held_out[label]) == keep_validation:
                        yield review, label

        def test_rows():
            for label, name in enumerate(LABELS):
                yield from ((r, label) for r in groups[("test", name)])

        return {
            "train": self._generate_examples("train", train_rows(False)),
            "validation": self._generate_examples("validation", train_rows(True)),
            "test": self._generate_examples("test", test_rows()),
            "unsupervised": self._generate_examples(
                "unsupervised", ((r, -1) for r in groups[("train", "unsup")])
            ),
        }

    def _generate_examples(self, split: str, rows) -> Iterator[tuple[str, dict]]:
        for review, label in rows:
            try:
                text = review.raw.decode("utf-8")
            except UnicodeDecodeError:
                text = review.raw.decode("utf-8", "replace")
                self._count(split, "invalid_utf8_replaced")
            if not text.strip():
                self._count(split, "empty_reviews_skipped")
                continue
            kind = "unsup" if label < 0 else LABELS[label]
            if review.rating not in _RATINGS[kind]:
                self._count(split, "rating_outside_label_range")
            yield review.path, {"text": text, "label": label, "rating": review.rating, "id": review.path}


def imdb_builder(*, source: str | None = None, download: bool = False, data_dir: str | None = None,
                 validation_percent: int = 10, seed: int = 0) -> MemgptImdb:
    """The IMDb builder for these settings (``prepare(builder)`` generates it)."""
    config = config_arg(MemgptImdb, imdb_config(validation_percent, seed))
    return MemgptImdb(source=source, download=download, data_dir=data_dir, config=config)
