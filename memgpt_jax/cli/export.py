"""``memgpt-jax export`` and ``memgpt-jax import``: Orbax checkpoints to PyTorch and back.

    memgpt-jax export --checkpoint runs/x --out exported/x-torch --format torch
    memgpt-jax export --checkpoint runs/x --out exported/x-hf --format hf-gpt2
    memgpt-jax import --source exported/x-hf --format hf-gpt2 --workdir runs/from-hf

``export`` restores the newest usable checkpoint of a run (``--step`` picks
another), rebuilds its model config and task head from the config saved with
it, and writes the directory atomically (temporary directory, renamed at the
end). ``import`` turns an exported or Hugging Face GPT-2 directory into a
parameters-only Orbax checkpoint, usable as ``train.init_from``,
``distill.teacher`` or the input of another export.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

FORMATS = ("torch", "hf-gpt2")


def load_run(run_dir: str, step: int | None = None) -> tuple[Any, Any, str, bytes | None, dict[str, Any]]:
    """``(params, ModelConfig, head, tokenizer bytes, source info)`` of a training run."""
    from memgpt_jax.config import ModelConfig
    from memgpt_jax.export.mapping import ConversionError
    from memgpt_jax.training.checkpoint import load_params

    params, meta = load_params(run_dir, step)
    config = meta.get("config") or {}
    if "model" not in config:
        raise ConversionError(f"the checkpoint in {run_dir} carries no model config; cannot export it")
    head = config.get("task", "lm")
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{run_dir}: the saved model config is invalid: {e}") from None
    source = {"checkpoint": run_dir, "step": meta.get("step"), "task": head}
    if meta.get("quantization"):  # weight-only quantized: export the dequantized float weights
        if model_config.int8_activations:
            raise ConversionError(f"{run_dir}: int8_activations=True (integer activations) cannot be exported; "
                                  "export the float checkpoint it was quantized from")
        from memgpt_jax.compress.quantize import dequantize_params

        params = dequantize_params(params)
        source["dequantized"] = {k: v for k, v in meta["quantization"].items() if k != "tensors"}
    return params, model_config, head, meta.get("tokenizer"), source


def export_checkpoint(run_dir: str, out: str, fmt: str, *, step: int | None = None,
                      overwrite: bool = False) -> dict[str, Any]:
    """Exports a run; returns ``{"out", "head", "load_s", "write_s"}``."""
    from memgpt_jax.export.hf_gpt2 import export_hf_gpt2
    from memgpt_jax.export.mapping import ConversionError
    from memgpt_jax.export.torch_format import export_torch

    if fmt not in FORMATS:
        raise ConversionError(f"--format {fmt!r}: choose one of {FORMATS}")
    t0 = time.perf_counter()
    params, config, head, tokenizer, source = load_run(run_dir, step)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if fmt == "torch":
        path = export_torch(params, config, head, out, tokenizer=tokenizer, source=source, overwrite=overwrite)
    else:  # refuses configs GPT-2 cannot express before writing anything
        path = export_hf_gpt2(params, config, head, out, tokenizer=tokenizer, overwrite=overwrite)
    return {"out": path, "head": head, "load_s": load_s, "write_s": time.perf_counter() - t0}


def import_directory(source: str, fmt: str, workdir: str, *, head: str | None = None) -> dict[str, Any]:
    """Writes the model in ``source`` (torch or hf-gpt2 directory) as a checkpoint of ``workdir``."""
    import os

    from memgpt_jax.export.mapping import ConversionError
    from memgpt_jax.training.checkpoint import save_params

    t0 = time.perf_counter()
    if fmt == "torch":
        from memgpt_jax.export.torch_format import import_torch, read_tokenizer

        config, head_found, params = import_torch(source)
        if head and head != head_found:
            raise ConversionError(f"{source} holds a {head_found!r} model, not {head!r}")
        head, tokenizer = head_found, read_tokenizer(source)
    elif fmt == "hf-gpt2":
        from memgpt_jax.export.hf_gpt2 import import_hf_gpt2
        from memgpt_jax.export.torch_format import read_tokenizer

        config, params = import_hf_gpt2(source, head)
        head = head or _hf_head(source)
        tokenizer = read_tokenizer(source)
    else:
        raise ConversionError(f"--format {fmt!r}: choose one of {FORMATS}")
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise ConversionError(f"{workdir} already holds checkpoints; import into a new --workdir")
    save_params(workdir, params, {"config": {"task": head, "model": config.to_dict()}, "tokenizer": tokenizer,
                                  "imported_from": os.path.abspath(source)})
    return {"workdir": os.path.abspath(workdir), "head": head, "wall_s": time.perf_counter() - t0}


def _hf_head(directory: str) -> str:
    import os

    from memgpt_jax.export import io
    from memgpt_jax.export.hf_gpt2 import config_from_hf

    hf = io.read_json(os.path.join(directory, "config.json"))
    return config_from_hf(hf, source=directory)[1]


def _run(fn, *args, **kwargs) -> int:
    from memgpt_jax.export.mapping import ConversionError

    try:
        result = fn(*args, **kwargs)
    except (ConversionError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v:.2f}s" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run's checkpoint to PyTorch (safetensors) or Hugging Face GPT-2",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run directory (the --workdir of a training run)")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    p.add_argument("--format", choices=FORMATS, default="torch",
                   help="torch: our PyTorch module, every config; hf-gpt2: transformers GPT-2, dense configs")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest usable one)")
    p.add_argument("--overwrite", action="store_true", help="replace --out once the new export is complete")
    p.set_defaults(func=lambda a: _run(export_checkpoint, a.checkpoint, a.out, a.format, step=a.step,
                                       overwrite=a.overwrite))

    p = sub.add_parser("import", help="turn an exported or Hugging Face GPT-2 directory into an Orbax checkpoint",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="directory written by `export` or a Hugging Face GPT-2 model")
    p.add_argument("--format", choices=FORMATS, default="hf-gpt2")
    p.add_argument("--workdir", required=True, help="new run directory to write the checkpoint into")
    p.add_argument("--head", choices=("lm", "classification", "qa"), default=None,
                   help="task head (default: the source's)")
    p.set_defaults(func=lambda a: _run(import_directory, a.source, a.format, a.workdir, head=a.head))
