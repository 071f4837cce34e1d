"""Extractive QA data in SQuAD format, as a tfds builder.

Input files are SQuAD v1.1 / v2.0 JSON (``{"data": [{"title", "paragraphs":
[{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}``)
supplied by the user (``memgpt-jax data prepare squad --train F --validation F``).
Each question becomes one record::

    id, title, context, question: text
    answers: sequence of text;  answer_starts: sequence of int32 (character offsets)

Unanswerable questions (SQuAD 2.0 ``is_impossible``) and answers whose text
does not occur at their offset are skipped and counted in the prepare report.
The config name (``--name``, default ``custom``) keeps several QA datasets apart.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from memgpt_jax.data.prepared import DataError, ReportingBuilder


def read_squad(path: str) -> Iterator[dict[str, Any]]:
    """Yields one record per question of a SQuAD-format JSON file, with ``_skip`` set to a
    reason for questions that cannot be used."""
    if not os.path.isfile(path):
        raise DataError(f"SQuAD file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            blob = json.load(f)
        articles = blob["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path} is not SQuAD-format JSON ({type(err).__name__}: {err}); expected "
                        '{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}') from err
    for a_i, article in enumerate(articles):
        title = str(article.get("title", ""))
        for p_i, para in enumerate(article.get("paragraphs", [])):
            context = para["context"]
            for q_i, qa in enumerate(para.get("qas", [])):
                rec = {"id": str(qa.get("id", f"{a_i}-{p_i}-{q_i}")), "title": title, "context": context,
                       "question": qa["question"], "answers": [], "answer_starts": []}
                if qa.get("is_impossible") or not qa.get("answers"):
                    rec["_skip"] = "unanswerable_skipped"
                    yield rec
                    continue
                for ans in qa["answers"]:
                    text, start = ans["text"], int(ans["answer_start"])
                    if context[start:start + len(text)] != text:
                        continue
                    rec["answers"].append(text)
                    rec["answer_starts"].append(start)
                if not rec["answers"]:
                    rec["_skip"] = "misaligned_answers_skipped"
                yield rec


def holdout_articles(path: str, n: int, seed: int) -> set[str]:
    """Titles of ``n`` articles of a SQuAD file, drawn with ``seed`` (a validation split by
    article: no article's questions land on both sides)."""
    titles = list(dict.fromkeys(rec["title"] for rec in read_squad(path)))
    if not 0 < n < len(titles):
        raise DataError(f"--holdout-articles {n}: {path} has {len(titles)} articles; hold out between 1 and "
                        f"{len(titles) - 1}")
    order = np.random.default_rng(seed).permutation(len(titles))
    return {titles[i] for i in order[:n]}


@dataclasses.dataclass
class SquadConfig(tfds.core.BuilderConfig):
    pass


class MemgptSquad(ReportingBuilder):
    """SQuAD-format JSON files -> ``train`` / ``validation`` / ``test`` splits."""

    PREPARE = "squad --train FILE --name {config}"

    PIPELINE = "squad"  # the data.dataset that reads it

    BUILDER_CONFIGS = [SquadConfig(name="custom", description="user-supplied SQuAD-format files")]

    def __init__(self, *, files: dict[str, str] | None = None, holdout_articles: int = 0, seed: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._files = {k: v for k, v in (files or {}).items() if v}
        self._holdout, self._seed = int(holdout_articles), int(seed)

    def settings(self) -> dict[str, Any]:
        return {"holdout_articles": self._holdout, "seed": self._seed} if self._holdout else {}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Extractive question answering in SQuAD format.",
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(), "title": tfds.features.Text(),
                "context": tfds.features.Text(), "question": tfds.features.Text(),
                "answers": tfds.features.Sequence(tfds.features.Text()),
                "answer_starts": tfds.features.Sequence(np.int32),
            }),
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        if "train" not in self._files and "validation" not in self._files:
            raise DataError("give at least --train or --validation (SQuAD-format JSON files)")
        self.report["sources"] = dict(self._files)
        self.info.metadata["report"] = self.report
        if not self._holdout:
            return {split: self._generate_examples(split, path) for split, path in self._files.items()}
        if "train" not in self._files or "validation" in self._files:
            raise DataError("--holdout-articles carves validation out of --train: give --train and no --validation")
        held = holdout_articles(self._files["train"], self._holdout, self._seed)
        self.report.update(holdout_seed=self._seed, validation_articles=", ".join(sorted(held)))
        splits = {"train": self._generate_examples("train", self._files["train"], lambda t: t not in held),
                  "validation": self._generate_examples("validation", self._files["train"], lambda t: t in held)}
        if "test" in self._files:
            splits["test"] = self._generate_examples("test", self._files["test"])
        return splits

    def _generate_examples(self, split: str, path: str, keep=None) -> Iterator[tuple[str, dict]]:
        seen: set[str] = set()
        for rec in read_squad(path):
            if keep is not None and not keep(rec["title"]):
                continue
            reason = rec.pop("_skip", None)
            if reason:
                self._count(split, reason)
                continue
            key = rec["id"]
            if key in seen:
                self._count(split, "duplicate_ids_skipped")
                continue
            seen.add(key)
            yield key, rec


def squad_builder(*, files: dict[str, str], name: str = "custom", data_dir: str | None = None,
                  holdout_articles: int = 0, seed: int = 0) -> MemgptSquad:
    config = name if name == "custom" else SquadConfig(name=name, description="user-supplied SQuAD-format files")
    return MemgptSquad(files=files, data_dir=data_dir, config=config, holdout_articles=holdout_articles, seed=seed)
