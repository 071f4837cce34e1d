"""Knowledge-grounded task dialogue (ConvLab-3's unified format, e.g. KVRET) as
prompt -> target pairs, as a tfds builder.

The source is a JSON list of dialogues (optionally ``.gz``), each with ``dialogue_id``,
``data_split``, ``domains`` and ``turns``; a turn has ``speaker`` (``user`` or
``system``), ``utterance`` and, for system turns, ``db_results`` (the knowledge-base
rows the system saw: ``{domain: [{column: value}]}``). Every system turn becomes one
example:

- **prompt**: the knowledge base, then the dialogue so far, rendered as
  :func:`memgpt_jax.data.pairs.render_chat` renders a chat (``User: ...`` /
  ``Assistant: ...`` lines ending with ``Assistant:``), so ``memgpt-jax chat --kb``
  builds the same text. The knowledge base is one line per domain::

      KB navigate: poi ; poi_type ; address ; distance ; traffic_info | Dish Parking ; parking garage ; ...

  (column names once, then one ``|``-separated row per entry; weather cells
  ``"stormy, low of 50F, high of 70F"`` are shortened to ``"stormy 50F-70F"``);
- **target**: the system utterance;
- **entities**: the entity values the target mentions (see below), for scoring;
- **domain**: the dialogue's first domain.

**Entities.** The entity vocabulary is every knowledge-base value of the source
(weather cells split into the condition and the two temperatures) plus every value
annotated in the user turns' ``dialogue_acts`` for a slot that is also a
knowledge-base column and is annotated at least twice (once is mostly noise:
``"no"``, ``"locally"``), lower-cased, at least two characters. A text mentions an
entity where the value occurs in the lower-cased text between word boundaries;
overlapping matches keep the longest. The vocabulary is stored in the dataset's
metadata (``entities``), so predictions are scored with the same list
(:func:`memgpt_jax.apps.text_metrics.entity_f1`). This follows the KVRET literature
(Eric et al., 2017; Madotto et al., 2018), which scores the entities of a global
entity list found in the reference and in the generated response.

    memgpt-jax data prepare dialogue --source $MEMGPT_SHARED_DATA/kvret/kvret_train_validation.json.gz --name kvret
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import os
import re
from typing import Any, Iterable, Iterator, Mapping, Sequence

import tensorflow_datasets as tfds

from memgpt_jax.data.pairs import render_chat
from memgpt_jax.data.prepared import DataError, ReportingBuilder

_WEATHER = re.compile(r"^\s*([^,]+),\s*low of\s*(\S+),\s*high of\s*(\S+)\s*$", re.I)


def _cell(value: Any) -> str:
    text = " ".join(str(value).split())
    found = _WEATHER.match(text)
    return f"{found.group(1)} {found.group(2)}-{found.group(3)}" if found else text


def serialize_kb(db: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]]) -> str:
    """The knowledge base as text: one line per domain, columns once, rows ``|``-separated.
    A bare list of rows is one unnamed table."""
    tables = {"": db} if isinstance(db, Sequence) else db
    lines = []
    for domain, rows in tables.items():
        rows = [r for r in rows or [] if isinstance(r, Mapping)]
        if not rows:
            continue
        columns = list(dict.fromkeys(c for r in rows for c in r))
        body = " | ".join(" ; ".join(_cell(r.get(c, "-")) for c in columns) for r in rows)
        lines.append(f"KB{' ' + domain if domain else ''}: {' ; '.join(columns)} | {body}")
    return "\n".join(lines)


def dialogue_prompt(kb_text: str, turns: Sequence[tuple[str, str]]) -> str:
    """``turns``: ``(speaker, text)`` with speaker ``user`` or ``system`` (or ``assistant``)."""
    chat = [("system", kb_text)] if kb_text else []
    chat += [("user" if s == "user" else "assistant", t) for s, t in turns]
    return render_chat(chat)


def kb_values(db: Mapping[str, Sequence[Mapping[str, Any]]]) -> Iterator[tuple[str, str]]:
    """``(column, value)`` of every cell; weather cells give the condition and both temperatures."""
    for rows in (db or {}).values():
        for row in rows or []:
            for column, value in row.items():
                text = " ".join(str(value).split())
                found = _WEATHER.match(text)
                if found:
                    yield column, found.group(1)
                    yield column, found.group(2)
                    yield column, found.group(3)
                else:
                    yield column, text


class EntityMatcher:
    """Finds the entities of a fixed vocabulary in text (lower-cased, word-bounded,
    longest first, no overlaps)."""

    def __init__(self, vocabulary: Iterable[str]) -> None:
        self.vocabulary = sorted({v.lower() for v in vocabulary if len(v.strip()) >= 2}, key=lambda v: (-len(v), v))
        alternatives = "|".join(re.escape(v) for v in self.vocabulary) or r"(?!x)x"
        self._pattern = re.compile(rf"(?<![\w])(?:{alternatives})(?![\w])")

    def __call__(self, text: str) -> list[str]:
        return self._pattern.findall(text.lower())


def read_dialogues(source: str) -> list[dict[str, Any]]:
    if not os.path.isfile(source):
        raise DataError(f"dialogue source {source!r} does not exist (a unified-format .json or .json.gz)")
    try:
        opener = gzip.open if source.endswith(".gz") else open
        with opener(source, "rt", encoding="utf-8") as f:
            dialogues = json.load(f)
        if not isinstance(dialogues, list) or not all("turns" in d for d in dialogues):
            raise ValueError("expected a JSON list of dialogues with 'turns'")
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{source} is not a unified-format dialogue file ({err})") from err
    return dialogues


def entity_vocabulary(dialogues: Sequence[Mapping[str, Any]]) -> list[str]:
    columns, values = set(), set()
    for d in dialogues:
        for turn in d["turns"]:
            for column, value in kb_values(turn.get("db_results") or {}):
                columns.add(column)
                values.add(value.lower())
    annotated: collections.Counter = collections.Counter()
    for d in dialogues:
        for turn in d["turns"]:
            for act in (turn.get("dialogue_acts") or {}).get("non-categorical", []):
                if act.get("slot") in columns and act.get("value"):
                    annotated[" ".join(str(act["value"]).split()).lower()] += 1
    values |= {v for v, n in annotated.items() if n >= 2}  # once: annotation noise ("no", "locally")
    return sorted(v for v in values if len(v) >= 2)


@dataclasses.dataclass
class DialogueConfig(tfds.core.BuilderConfig):
    pass


class MemgptDialogue(ReportingBuilder):
    """One prompt -> target example per system turn, grounded in its knowledge base."""

    PREPARE = "dialogue --source DIALOGUES.json.gz --name {config}"

    PIPELINE = "pairs"  # the data.dataset that reads it

    def __init__(self, *, source: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source = source

    def settings(self) -> dict[str, Any]:
        return {"source": os.path.abspath(self._source) if self._source else None}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Knowledge-grounded dialogue: KB + history -> system turn.",
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(), "prompt": tfds.features.Text(), "target": tfds.features.Text(),
                "domain": tfds.features.Text(), "entities": tfds.features.Sequence(tfds.features.Text()),
            }),
            supervised_keys=("prompt", "target"),
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        if not self._source:
            raise DataError("give --source: a unified-format dialogue .json(.gz)")
        dialogues = read_dialogues(self._source)
        vocabulary = entity_vocabulary(dialogues)
        matcher = EntityMatcher(vocabulary)
        splits: dict[str, list] = {}
        for d in dialogues:
            splits.setdefault(str(d.get("data_split", "train")), []).append(d)
        self.report.update(source=self._source, entity_vocabulary=len(vocabulary),
                           dialogues={k: len(v) for k, v in splits.items()})
        self.info.metadata["report"] = self.report
        self.info.metadata["entities"] = vocabulary
        return {split: self._generate_examples(split, ds, matcher) for split, ds in sorted(splits.items())}

    def _generate_examples(self, split: str, dialogues: list, matcher: EntityMatcher) -> Iterator[tuple[str, dict]]:
        for n, d in enumerate(dialogues):
            history: list[tuple[str, str]] = []
            domain = (d.get("domains") or [""])[0]
            for i, turn in enumerate(d["turns"]):
                text = " ".join(str(turn.get("utterance", "")).split())
                if turn.get("speaker") == "system":
                    if not text or not history:
                        self._count(split, "empty_or_opening_system_turns_skipped")
                    else:
                        key = f"{d.get('dialogue_id', f'{split}-{n}')}-{i}"
                        yield key, {"id": key, "prompt": dialogue_prompt(serialize_kb(turn.get("db_results") or {}),
                                                                         history),
                                    "target": text, "domain": domain, "entities": matcher(text)}
                history.append((str(turn.get("speaker")), text))


def dialogue_builder(source: str | None, *, name: str = "kvret", data_dir: str | None = None) -> MemgptDialogue:
    config = DialogueConfig(name=name, description="unified-format dialogues")
    return MemgptDialogue(source=source, data_dir=data_dir, config=config)
