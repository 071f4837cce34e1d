"""ListOps (Nangia & Bowman 2018, as used in Long Range Arena, Tay et al. 2020).

An example is a nested prefix expression over the digits 0-9 with four
operators, whose value (0-9) is the label (10 classes)::

    [MAX 2 9 [MIN 4 7 ] 0 ]        -> 9
    [SM 3 [MED 1 8 2 ] 6 ]         -> (3 + 2 + 6) % 10 = 1

``MAX``/``MIN`` as named, ``MED`` the median (the floor of the mean of the two
middle values when there is an even count), ``SM`` the sum modulo 10. Tokens are
the whitespace-separated words (``[MAX`` is one token, ``]`` closes), so
``length`` counts what :class:`~memgpt_jax.data.tokenizers.ListOpsTokenizer`
produces.

Generation follows LRA's recipe, written afresh: from the root operator, each
argument becomes a nested operator with probability ``branch_prob`` (never
below ``max_depth``), else a digit; an operator takes 2..``max_args``
arguments; trees whose token count falls outside ``[min_length, max_length]``
are rejected and redrawn. Example ``i`` of split ``s`` is drawn from its own RNG
seeded by ``(seed, s, i)``, so an example never depends on the sizes asked for,
and preparing twice gives identical data. No download: this is the offline
default for demos and tests.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from memgpt_jax.data.prepared import ReportingBuilder, config_arg
from memgpt_jax.progress import bar as progress_bar

DIGITS = tuple(str(d) for d in range(10))
OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
CLOSE = "]"
LISTOPS_WORDS = DIGITS + OPERATORS + (CLOSE,)
SPLITS = ("train", "validation", "test")
MAX_ATTEMPTS = 100_000


def apply_op(op: str, values: list[int]) -> int:
    """Value of operator ``op`` (e.g. ``"[MAX"``) applied to digit ``values``."""
    if op == "[MAX":
        return max(values)
    if op == "[MIN":
        return min(values)
    if op == "[MED":
        ordered = sorted(values)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2
    if op == "[SM":
        return sum(values) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def evaluate(text: str) -> int:
    """Value of a ListOps expression (the label); raises ``ValueError`` if malformed."""
    stack: list[tuple[str, list[int]]] = []
    result = None
    for word in text.split():
        if word in OPERATORS:
            stack.append((word, []))
        elif word == CLOSE or word in DIGITS:
            if word == CLOSE:
                if not stack or not stack[-1][1]:
                    raise ValueError(f"unbalanced or empty operator in {text[:80]!r}")
                op, args = stack.pop()
                value = apply_op(op, args)
            else:
                value = int(word)
            if stack:
                stack[-1][1].append(value)
            elif result is None:
                result = value
            else:
                raise ValueError(f"more than one expression in {text[:80]!r}")
        else:
            raise ValueError(f"unknown ListOps word {word!r}")
    if stack or result is None:
        raise ValueError(f"incomplete ListOps expression {text[:80]!r}")
    return result


class _TooLong(Exception):
    pass


def _draw(rng: random.Random, cfg: "ListOpsConfig") -> tuple[list[str], int, int]:
    """One random tree: (tokens, value, depth); raises _TooLong past max_length."""
    tokens: list[str] = []

    def node(depth: int, force_op: bool) -> tuple[int, int]:
        if not force_op and (depth >= cfg.max_depth or rng.random() >= cfg.branch_prob):
            digit = rng.randrange(10)
            tokens.append(DIGITS[digit])
            return digit, depth
        op = OPERATORS[rng.randrange(len(OPERATORS))]
        tokens.append(op)
        values, deepest = [], depth
        for _ in range(rng.randint(2, cfg.max_args)):
            value, d = node(depth + 1, False)
            values.append(value)
            deepest = max(deepest, d)
            if len(tokens) >= cfg.max_length:
                raise _TooLong
        tokens.append(CLOSE)
        return apply_op(op, values), deepest

    value, depth = node(1, True)
    if len(tokens) > cfg.max_length:
        raise _TooLong
    return tokens, value, depth


def generate_example(cfg: "ListOpsConfig", split: str, index: int) -> dict[str, Any]:
    """Example ``index`` of ``split``: ``{"text", "label", "length", "depth"}``."""
    rng = random.Random(f"listops/{cfg.seed}/{split}/{index}")
    for _ in range(MAX_ATTEMPTS):
        try:
            tokens, value, depth = _draw(rng, cfg)
        except _TooLong:
            continue
        if len(tokens) >= cfg.min_length:
            return {"text": " ".join(tokens), "label": value, "length": len(tokens), "depth": depth}
    raise RuntimeError(
        f"ListOps: no tree with {cfg.min_length}..{cfg.max_length} tokens in {MAX_ATTEMPTS} "
        f"draws (max_depth={cfg.max_depth}, max_args={cfg.max_args}, "
        f"branch_prob={cfg.branch_prob}); widen the length range or raise branch_prob"
    )


@dataclasses.dataclass
class ListOpsConfig(tfds.core.BuilderConfig):
    """Sizes and shape of a generated ListOps dataset."""

    train: int = 2_000
    validation: int = 200
    test: int = 200
    min_length: int = 16
    max_length: int = 256
    max_depth: int = 6
    max_args: int = 6
    branch_prob: float = 0.35
    seed: int = 0

    def validate(self) -> None:
        if min(self.train, self.validation, self.test) < 0:
            raise ValueError("ListOps split sizes must be >= 0")
        if not 3 <= self.min_length <= self.max_length:
            raise ValueError(f"need 3 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if self.max_depth < 1 or self.max_args < 2 or not 0 < self.branch_prob <= 1:
            raise ValueError("need max_depth >= 1, max_args >= 2 and 0 < branch_prob <= 1")


PRESETS = {
    # Small and quick (seconds): the offline default for demos and tests.
    "tiny": dict(train=2_000, validation=200, test=200, min_length=16, max_length=256,
                 max_depth=6, max_args=6, branch_prob=0.35),
    # Long Range Arena's sizes: 96k/2k/2k, 500-2,000 tokens, depth 10, up to 10 args.
    "lra": dict(train=96_000, validation=2_000, test=2_000, min_length=500, max_length=2_000,
                max_depth=10, max_args=10, branch_prob=0.25),
}


def listops_config(preset: str | None = "tiny", **overrides: Any) -> ListOpsConfig:
    """A preset (``tiny``/``lra``), optionally with fields overridden (renamed then)."""
    fields = dict(PRESETS[preset or "tiny"])
    fields.setdefault("seed", 0)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ListOpsConfig)}
    if unknown:
        raise ValueError(f"unknown ListOps settings {sorted(unknown)}")
    changed = {k: v for k, v in overrides.items() if v is not None and fields.get(k) != v}
    fields.update(changed)
    if changed:
        name = (f"n{fields['train']}-{fields['validation']}-{fields['test']}"
                f"_len{fields['min_length']}-{fields['max_length']}_d{fields['max_depth']}"
                f"_a{fields['max_args']}_p{round(fields['branch_prob'] * 100)}_seed{fields['seed']}")
    else:
        name = preset or "tiny"
    cfg = ListOpsConfig(name=name, description=f"ListOps {fields}", **fields)
    cfg.validate()
    return cfg


class MemgptListops(ReportingBuilder):
    """ListOps generated from a seed: splits train, validation, test; 10 classes."""

    BUILDER_CONFIGS = [listops_config("tiny"), listops_config("lra")]
    PIPELINE = "listops"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="ListOps (LRA): nested MAX/MIN/MED/SM expressions over digits.",
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(num_classes=10),
                "length": np.int32,
                "depth": np.int32,
            }),
            supervised_keys=("text", "label"),
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        cfg = self.builder_config
        cfg.validate()
        self.info.metadata["report"] = self.report
        # tfds cannot write an empty split: a size of 0 leaves the split out.
        return {s: self._generate_examples(s, getattr(cfg, s)) for s in SPLITS if getattr(cfg, s) > 0}

    def _generate_examples(self, split: str, count: int) -> Iterator[tuple[int, dict]]:
        lengths = []
        # tens of thousands of long expressions take a minute: say so (small presets stay quiet)
        for i in progress_bar(range(count), desc=f"generating ListOps {split}", unit="ex", leave=False, file=sys.stderr,
                      disable=count < 10_000, mininterval=1.0):
            example = generate_example(self.builder_config, split, i)
            lengths.append(example["length"])
            yield i, example
        if lengths:
            self.report.setdefault("mean_length", {})[split] = round(float(np.mean(lengths)), 1)


def listops_builder(preset: str = "tiny", *, data_dir: str | None = None, **overrides: Any) -> MemgptListops:
    """The ListOps builder for a preset with optional overrides (see :func:`listops_config`)."""
    config = config_arg(MemgptListops, listops_config(preset, **overrides))
    return MemgptListops(data_dir=data_dir, config=config)
