"""Prompt -> target datasets (translation, summarization, dialogue) as a tfds builder.

Each split comes from one of:

- a **JSONL** file (``.jsonl``, optionally ``.gz``), one object per line, either
  ``{"prompt": ..., "target": ...}`` or the chat form
  ``{"turns": ["user text", "assistant text", "user text", "assistant text", ...]}``
  (or ``{"messages": [{"role": "user"|"assistant"|"system", "content": ...}, ...]}``):
  every assistant turn becomes one example whose prompt is the conversation
  before it, rendered as ``User: ...\\nAssistant: ...\\n ... User: ...\\n``;
- **parallel text files** ``SOURCE,TARGET`` (optionally ``.gz``): line ``i`` of
  the source is the prompt for line ``i`` of the target (the line counts must
  match).

Records: ``id`` (``<split>-<n>``), ``prompt``, ``target``. Empty prompts or
targets are skipped and counted in the report. Prepare with::

    memgpt-jax data prepare pairs --name multi30k_en_de \\
        --split train=$D/train.en.gz,$D/train.de.gz --split val=$D/val.en.gz,$D/val.de.gz
    memgpt-jax data prepare pairs --name support --split train=dialogues.jsonl
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from typing import Any, Iterator

import tensorflow_datasets as tfds

from memgpt_jax.data.prepared import DataError, ReportingBuilder

USER, ASSISTANT = "User: ", "Assistant: "


def _open(path: str):
    if not os.path.isfile(path):
        raise DataError(f"{path!r} does not exist")
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def render_chat(turns: list[tuple[str, str]]) -> str:
    """``[(role, text)]`` -> the prompt text (ending with ``Assistant:``'s turn to speak)."""
    out = []
    for role, text in turns:
        if role == "system":
            out.append(text.strip() + "\n")
        else:
            out.append((USER if role == "user" else ASSISTANT) + text.strip() + "\n")
    return "".join(out) + ASSISTANT.rstrip()


def chat_examples(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """``(prompt, target)`` for every assistant turn of a chat record."""
    if "turns" in obj:
        turns = [("user" if i % 2 == 0 else "assistant", str(t)) for i, t in enumerate(obj["turns"])]
    else:
        turns = [(str(m["role"]), str(m["content"])) for m in obj["messages"]]
    bad = {r for r, _ in turns} - {"user", "assistant", "system"}
    if bad:
        raise ValueError(f"unknown roles {sorted(bad)}")
    return [(render_chat(turns[:i]), text) for i, (role, text) in enumerate(turns) if role == "assistant" and i > 0]


def read_jsonl_pairs(path: str) -> Iterator[tuple[str, str]]:
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if "prompt" in obj and "target" in obj:
                    yield str(obj["prompt"]), str(obj["target"])
                elif "turns" in obj or "messages" in obj:
                    yield from chat_examples(obj)
                else:
                    raise ValueError('expected "prompt" and "target", "turns", or "messages"')
            except (json.JSONDecodeError, ValueError, KeyError, TypeError) as err:
                raise DataError(f"{path}:{n}: {err}") from err


def read_parallel(source: str, target: str) -> Iterator[tuple[str, str]]:
    with _open(source) as fs, _open(target) as ft:
        src, tgt = fs.read().split("\n"), ft.read().split("\n")
    for lines in (src, tgt):
        if lines and lines[-1] == "":
            lines.pop()
    if len(src) != len(tgt):
        raise DataError(f"{source} has {len(src)} lines but {target} has {len(tgt)}; parallel files must match")
    yield from zip(src, tgt)


def parse_split_spec(spec: str) -> tuple[str, list[str]]:
    """``NAME=FILE.jsonl`` or ``NAME=SOURCE,TARGET`` -> ``(name, files)``."""
    name, sep, files = spec.partition("=")
    paths = [p for p in files.split(",") if p]
    if not sep or not name or len(paths) not in (1, 2):
        raise ValueError(f"--split expects NAME=FILE.jsonl or NAME=SOURCE,TARGET, got {spec!r}")
    return name, paths


@dataclasses.dataclass
class PairsConfig(tfds.core.BuilderConfig):
    pass


class MemgptPairs(ReportingBuilder):
    """Prompt/target pairs from JSONL or parallel text files."""

    PREPARE = "pairs --name {config} --split SPLIT=FILES"

    PIPELINE = "pairs"  # the data.dataset that reads it

    def __init__(self, *, splits: dict[str, list[str]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._splits = dict(splits or {})

    def settings(self) -> dict[str, Any]:
        """The source files of each split: preparing the same name from other files (or
        with other splits) is refused instead of silently reusing the old data."""
        return {"splits": {k: [os.path.abspath(p) for p in v] for k, v in sorted(self._splits.items())}}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Prompt -> target pairs (translation, summarization, dialogue).",
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(), "prompt": tfds.features.Text(), "target": tfds.features.Text(),
            }),
            supervised_keys=("prompt", "target"),
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        if not self._splits:
            raise DataError("no splits given: use --split NAME=FILE.jsonl or --split NAME=SOURCE,TARGET")
        self.report["sources"] = {k: ",".join(v) for k, v in self._splits.items()}
        return {name: self._generate_examples(name, files) for name, files in self._splits.items()}

    def _generate_examples(self, split: str, files: list[str]) -> Iterator[tuple[str, dict]]:
        pairs = read_jsonl_pairs(files[0]) if len(files) == 1 else read_parallel(*files)
        for n, (prompt, target) in enumerate(pairs):
            if not prompt.strip() or not target.strip():
                self._count(split, "empty_pairs_skipped")
                continue
            key = f"{split}-{n}"
            yield key, {"id": key, "prompt": prompt, "target": target}


def pairs_builder(name: str, splits: dict[str, list[str]], *, data_dir: str | None = None) -> MemgptPairs:
    config = PairsConfig(name=name, description=f"prompt/target pairs: {', '.join(sorted(splits))}")
    return MemgptPairs(splits=splits, data_dir=data_dir, config=config)
