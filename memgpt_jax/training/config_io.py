"""Experiment configs: Python files with ``get_config()`` returning a ConfigDict.

``load_config("configs/listops.py", ["--config.train.steps=10"])`` loads the
file (``path:arg`` passes ``arg`` to ``get_config``) and applies command-line
overrides with ConfigDict's type checking, as Flax's examples do.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from typing import Sequence

import ml_collections


def _parse(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(config: ml_collections.ConfigDict, dotted: str, raw: str) -> None:
    node = config
    parts = dotted.split(".")
    for part in parts[:-1]:
        if part not in node:
            raise KeyError(f"--config.{dotted}: no section {part!r} (have {sorted(node.keys())})")
        node = node[part]
    key = parts[-1]
    if key not in node:
        raise KeyError(f"--config.{dotted}: unknown field {key!r} (have {sorted(node.keys())})")
    value = _parse(raw)
    current = node[key]
    if isinstance(current, bool) and isinstance(value, str):
        value = value.lower() in ("1", "true", "yes")
    elif isinstance(current, float) and isinstance(value, int):
        value = float(value)
    elif isinstance(current, str) and not isinstance(value, str):
        value = raw
    elif isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    try:
        node[key] = value
    except TypeError as e:
        raise TypeError(f"--config.{dotted}={raw}: {e}") from None


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    path, _, arg = path.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found (see configs/ for the available ones)")
    spec = importlib.util.spec_from_file_location(f"memgpt_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    config_dir = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, config_dir)  # configs import their shared defaults (configs/base.py)
    try:
        sys.modules.pop("base", None)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(config_dir)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"config file {path} defines no get_config()")
    config = module.get_config(arg) if arg else module.get_config()
    for item in overrides:
        if not item.startswith("--config."):
            raise ValueError(f"override {item!r} must look like --config.section.field=value")
        dotted, eq, raw = item[len("--config."):].partition("=")
        if not eq:
            raise ValueError(f"override {item!r} needs '=value'")
        apply_override(config, dotted, raw)
    return config
