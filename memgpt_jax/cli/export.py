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
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memgpt_jax.training.run import Run

FORMATS = ("torch", "hf-gpt2")


def exportable(run: Run) -> tuple[Any, dict[str, Any]]:
    """``(float parameters, source info)`` of an opened run: a weight-only quantized run
    exports its dequantized weights; integer activations cannot be exported."""
    from memgpt_jax.compress.quantize import dequantize_params  # lazy: keeps --help fast
    from memgpt_jax.export.mapping import ConversionError

    source = {"checkpoint": run.path, "step": run.step, "task": run.task}
    params = run.params
    if run.quantized:
        if run.model_config.int8_activations:
            raise ConversionError(f"{run.path}: int8_activations=True (integer activations) cannot be exported; "
                                  "export the float checkpoint it was quantized from")
        params = dequantize_params(params)
        source["dequantized"] = {k: v for k, v in run.quantization.items() if k != "tensors"}
    return params, source


def export_checkpoint(run_dir: str, out: str, fmt: str, *, step: int | None = None,
                      overwrite: bool = False) -> dict[str, Any]:
    """Exports a run; returns ``{"out", "head", "load_s", "write_s"}``."""
    # lazy: keeps --help fast
    from memgpt_jax.export.hf_gpt2 import export_hf_gpt2
    from memgpt_jax.export.io import check_replaceable
    from memgpt_jax.export.mapping import ConversionError
    from memgpt_jax.export.torch_format import export_torch
    from memgpt_jax.training.run import RunError, open_run

    if fmt not in FORMATS:
        raise ConversionError(f"--format {fmt!r}: choose one of {FORMATS}")
    check_replaceable(out, overwrite=overwrite)  # before any work
    t0 = time.perf_counter()
    try:
        run = open_run(run_dir, step=step)
    except RunError as e:
        raise ConversionError(str(e)) from None
    params, source = exportable(run)
    tokenizer = json.dumps(run.tokenizer.to_config()).encode() if run.tokenizer is not None else None
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if fmt == "torch":
        path = export_torch(params, run.model_config, run.task, out, tokenizer=tokenizer, source=source,
                            overwrite=overwrite)
    else:  # refuses configs GPT-2 cannot express before writing anything
        path = export_hf_gpt2(params, run.model_config, run.task, out, tokenizer=tokenizer, overwrite=overwrite)
    return {"out": path, "head": run.task, "load_s": load_s, "write_s": time.perf_counter() - t0}


def import_directory(source: str, fmt: str, workdir: str, *, head: str | None = None) -> dict[str, Any]:
    """Writes the model in ``source`` (torch or hf-gpt2 directory) as a checkpoint of ``workdir``."""
    # lazy: keeps --help fast
    from memgpt_jax.export.hf_gpt2 import config_from_hf, import_hf_gpt2, imported_run_config
    from memgpt_jax.export.io import read_json
    from memgpt_jax.export.mapping import ConversionError
    from memgpt_jax.export.torch_format import import_torch, read_tokenizer
    from memgpt_jax.training.checkpoint import save_params

    t0 = time.perf_counter()
    if fmt == "torch":
        config, head_found, params = import_torch(source)
        if head and head != head_found:
            raise ConversionError(f"{source} holds a {head_found!r} model, not {head!r}")
        head = head_found
    elif fmt == "hf-gpt2":
        config, params = import_hf_gpt2(source, head)
        head = head or config_from_hf(read_json(os.path.join(source, "config.json")), source=source)[1]
    else:
        raise ConversionError(f"--format {fmt!r}: choose one of {FORMATS}")
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise ConversionError(f"{workdir} already holds checkpoints; import into a new --workdir")
    save_params(workdir, params, {"config": imported_run_config(config, head).to_dict(),
                                  "tokenizer": read_tokenizer(source), "imported_from": os.path.abspath(source)})
    return {"workdir": os.path.abspath(workdir), "head": head, "wall_s": time.perf_counter() - t0}


def _run(fn, *args, **kwargs) -> int:
    from memgpt_jax.export.mapping import ConversionError  # lazy: keeps --help fast

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
    p.add_argument("--head", default=None, help="task head: a registered task (default: the source's)")
    p.set_defaults(func=lambda a: _run(import_directory, a.source, a.format, a.workdir, head=a.head))
