"""Plain-text corpora (one or more UTF-8 files, e.g. tiny Shakespeare) as a tfds builder.

Split: each file is cut once, at the line boundary nearest to
``(100 - validation_percent)%`` of its characters; the head goes to ``train``,
the tail to ``validation`` (nanoGPT's contiguous holdout, per file, so
neighbouring paragraphs never straddle the two splits). Deterministic; no seed.

Examples (``unit``): ``paragraph`` (default; blocks separated by blank lines),
``line`` (each non-blank line) or ``file`` (each split part whole). Features:
``text``, ``file`` (the path given) and ``index`` (position in the file part).
Blank separators are the only text not kept.

Bad input is never silently dropped: empty files are skipped with a warning and
counted in the report (all files empty is an error), invalid UTF-8 is replaced
with U+FFFD and counted, and a missing file is an error naming it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from memgpt_jax.data.prepared import DataError, ReportingBuilder

UNITS = ("paragraph", "line", "file")
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


@dataclasses.dataclass
class TextConfig(tfds.core.BuilderConfig):
    """``files`` cut into ``unit`` examples; ``validation_percent`` of each file held out."""

    files: tuple[str, ...] = ()
    validation_percent: int = 10
    unit: str = "paragraph"


def text_config(name: str, files: Sequence[str], validation_percent: int = 10,
                unit: str = "paragraph") -> TextConfig:
    """Config for a corpus called ``name`` (letters, digits, ``_``, ``-``, ``.``)."""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name or ""):
        raise ValueError(f"corpus name must be letters, digits, '_', '-' or '.', got {name!r}")
    if not files:
        raise DataError("no corpus files given; pass one or more UTF-8 text files (--files A.txt B.txt)")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if not 0 <= validation_percent < 100:
        raise ValueError(f"validation_percent must be in 0..99, got {validation_percent}")
    paths = tuple(os.path.abspath(os.path.expanduser(os.fspath(f))) for f in files)
    return TextConfig(name=name, description=f"text corpus {name}: {len(paths)} file(s), {unit}s",
                      files=paths, validation_percent=validation_percent, unit=unit)


def split_point(text: str, validation_percent: int) -> int:
    """Index where ``validation`` starts: a line start near the requested fraction."""
    if validation_percent == 0 or not text:
        return len(text)
    target = int(len(text) * (100 - validation_percent) / 100)
    before = text.rfind("\n", 0, target)
    after = text.find("\n", target)
    candidates = [i + 1 for i in (before, after) if i != -1 and 0 < i + 1 < len(text)]
    return min(candidates, key=lambda i: abs(i - target)) if candidates else target


def split_units(text: str, unit: str) -> list[str]:
    """Non-blank examples of ``text`` by ``unit`` (see module docstring)."""
    if unit == "file":
        parts = [text]
    elif unit == "line":
        parts = text.split("\n")
    else:
        parts = _BLANK_LINES.split(text)
    return [p.strip("\n") for p in parts if p.strip()]


class MemgptText(ReportingBuilder):
    """A corpus of plain UTF-8 text files with a deterministic validation holdout."""

    PREPARE = "text --files FILE... --name {config}"

    PIPELINE = "text"  # the data.dataset that reads it

    BUILDER_CONFIGS: list = []

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Plain-text corpus from local UTF-8 files.",
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "file": tfds.features.Text(),
                "index": np.int32,
            }),
            metadata=self._metadata(),
        )

    def settings(self) -> dict[str, Any]:
        cfg = self.builder_config
        return {"files": list(cfg.files), "validation_percent": cfg.validation_percent, "unit": cfg.unit}

    def _read_files(self) -> list[tuple[str, str]]:
        cfg = self.builder_config
        missing = [f for f in cfg.files if not os.path.isfile(f)]
        if missing:
            raise DataError(
                f"corpus file(s) not found: {', '.join(missing)}. Pass existing UTF-8 text files "
                "with --files (relative paths are resolved from the current directory)."
            )
        texts = []
        self.report.update(empty_files_skipped={}, invalid_utf8_files={})
        for path in cfg.files:
            with open(path, "rb") as f:
                raw = f.read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                text = raw.decode("utf-8", "replace")
                self.report.setdefault("invalid_utf8_files", {})[os.path.basename(path)] = (
                    f"first bad byte at {err.start}; replaced with U+FFFD")
            text = text.replace("\r\n", "\n")
            if not text.strip():
                print(f"warning: corpus file {path} is empty; skipped", flush=True)
                self.report.setdefault("empty_files_skipped", {})[os.path.basename(path)] = 1
                continue
            texts.append((path, text))
        if not texts:
            raise DataError(
                f"every corpus file is empty: {', '.join(cfg.files)}; nothing to prepare"
            )
        return texts

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        cfg = self.builder_config
        texts = self._read_files()
        self.report["characters_per_file"] = {os.path.basename(p): len(t) for p, t in texts}
        self.info.metadata["report"] = self.report
        parts: dict[str, list[tuple[str, str]]] = {"train": [], "validation": []}
        for path, text in texts:
            cut = split_point(text, cfg.validation_percent)
            parts["train"].append((path, text[:cut]))
            parts["validation"].append((path, text[cut:]))
            if cfg.validation_percent and not split_units(text[cut:], cfg.unit):
                self._count("validation", "files_too_short_for_validation")
        if not cfg.validation_percent:
            del parts["validation"]
        for split, items in parts.items():
            if not any(split_units(text, cfg.unit) for _, text in items):
                raise DataError(
                    f"the corpus is too short for a {split} split of {cfg.unit}s at "
                    f"validation_percent={cfg.validation_percent} (files: {', '.join(cfg.files)}); "
                    "add text, pick a finer --unit, or change --validation-percent (0: train only)"
                )
        return {split: self._generate_examples(split, items) for split, items in parts.items()}

    def _generate_examples(self, split: str, items) -> Iterator[tuple[str, dict[str, Any]]]:
        for file_idx, (path, text) in enumerate(items):
            for i, piece in enumerate(split_units(text, self.builder_config.unit)):
                yield f"{file_idx}/{i}", {"text": piece, "file": path, "index": i}


def text_builder(name: str, files: Sequence[str], *, data_dir: str | None = None,
                 validation_percent: int = 10, unit: str = "paragraph") -> MemgptText:
    """The text-corpus builder for ``files`` under the config name ``name``."""
    return MemgptText(data_dir=data_dir, config=text_config(name, files, validation_percent, unit))
