"""AESLC (Zhang & Tetreault, 2019): email body -> subject line, as a tfds builder.

The source is the official layout, as a ``.tar.gz`` or a directory:
``enron_subject_line/{train,dev,test}/*.subject``. Each file holds the email body,
then a line ``@subject`` and the subject line; ``dev`` and ``test`` files also carry
``@ann0``, ``@ann1``, ``@ann2``, three subject lines written by annotators. Whatever
splits the source holds are prepared (here ``train`` and ``dev``; ``test`` is withheld).

Records (the prompt->target layout of :mod:`memgpt_jax.data.pairs`, so every
prompt->target tool reads them)::

    id: the file name without ``.subject``;  prompt: the body, whitespace collapsed;
    target: the original subject line;       references: [subject, ann0, ann1, ann2] (those present)

Emails with an empty body or subject are skipped and counted in the report.

    memgpt-jax data prepare aeslc --source $MEMGPT_SHARED_DATA/aeslc/aeslc_train_dev.tar.gz
"""

from __future__ import annotations

import dataclasses
import os
import re
import tarfile
from typing import Any, Iterator

import tensorflow_datasets as tfds

from memgpt_jax.data.prepared import DataError, ReportingBuilder

SPLITS = ("train", "dev", "test")
_FIELD = re.compile(r"^@(subject|ann\d+)\s*$", re.M)


def parse_subject_file(text: str) -> dict[str, Any]:
    """``{"body", "subject", "annotations": [...]}`` of one ``.subject`` file."""
    parts = _FIELD.split(text)
    body, fields = parts[0], dict(zip(parts[1::2], parts[2::2]))
    if "subject" not in fields:
        raise ValueError("no @subject line")
    anns = [" ".join(fields[k].split()) for k in sorted(k for k in fields if k.startswith("ann"))]
    return {"body": " ".join(body.split()), "subject": " ".join(fields["subject"].split()),
            "annotations": [a for a in anns if a]}


def read_source(source: str) -> Iterator[tuple[str, str, str]]:
    """``(split, file id, text)`` for every ``.subject`` file of the archive or directory."""
    pattern = re.compile(r"(?:^|/)(train|dev|test)/([^/]+)\.subject$")
    if os.path.isdir(source):
        for root, _, files in os.walk(source):
            for name in sorted(files):
                found = pattern.search(os.path.join(root, name).replace(os.sep, "/"))
                if found:
                    with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                        yield found.group(1), found.group(2), f.read()
        return
    if not os.path.isfile(source):
        raise DataError(f"AESLC source {source!r} does not exist (give the .tar.gz or its extracted directory)")
    try:
        with tarfile.open(source) as tar:
            for member in tar:
                found = pattern.search(member.name)
                if found and member.isfile():
                    text = tar.extractfile(member).read().decode("utf-8", "replace")
                    yield found.group(1), found.group(2), text
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{source} is not a readable AESLC archive ({err})") from err


@dataclasses.dataclass
class AeslcConfig(tfds.core.BuilderConfig):
    pass


class MemgptAeslc(ReportingBuilder):
    """AESLC email -> subject pairs with their reference subjects."""

    PREPARE = "aeslc --source aeslc_train_dev.tar.gz"

    PIPELINE = "pairs"  # the data.dataset that reads it

    BUILDER_CONFIGS = [AeslcConfig(name="aeslc", description="AESLC, official layout")]

    def __init__(self, *, source: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source = source

    def settings(self) -> dict[str, Any]:
        return {"source": os.path.abspath(self._source) if self._source else None}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="AESLC: email body -> subject line, with the annotators' subjects as references.",
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(), "prompt": tfds.features.Text(), "target": tfds.features.Text(),
                "references": tfds.features.Sequence(tfds.features.Text()),
            }),
            supervised_keys=("prompt", "target"),
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        if not self._source:
            raise DataError("give --source: the AESLC .tar.gz or its extracted directory")
        by_split: dict[str, list[tuple[str, str]]] = {}
        for split, file_id, text in read_source(self._source):
            by_split.setdefault(split, []).append((file_id, text))
        if not by_split:
            raise DataError(f"{self._source} holds no enron_subject_line/{{train,dev,test}}/*.subject files")
        self.report["source"] = self._source
        self.info.metadata["report"] = self.report
        return {split: self._generate_examples(split, sorted(files)) for split, files in sorted(by_split.items())}

    def _generate_examples(self, split: str, files: list[tuple[str, str]]) -> Iterator[tuple[str, dict]]:
        for file_id, text in files:
            try:
                email = parse_subject_file(text)
            except ValueError:
                self._count(split, "no_subject_skipped")
                continue
            if not email["body"] or not email["subject"]:
                self._count(split, "empty_skipped")
                continue
            yield file_id, {"id": file_id, "prompt": email["body"], "target": email["subject"],
                            "references": [email["subject"], *email["annotations"]]}


def aeslc_builder(source: str | None, *, data_dir: str | None = None) -> MemgptAeslc:
    return MemgptAeslc(source=source, data_dir=data_dir, config="aeslc")
