"""The ``torch`` format: our parameters as safetensors for :class:`~memgpt_jax.export.torch_model.TorchGPT`.

An exported directory holds::

    config.json                    {"format": "memgpt-jax/torch", "head": ..., "model": ModelConfig.to_dict(), ...}
    model.safetensors              weights, named and laid out by ``mapping.ROWS`` (torch column)
    attention_layout.safetensors   block-sparse configs only: the layout's block table
    modeling_memgpt.py             a copy of ``torch_model.py`` (PyTorch only), so the directory
                                   loads without memgpt-jax: ``from modeling_memgpt import TorchGPT``
    memgpt_tokenizer.json          the run's tokenizer, when it has one, in terms PyTorch users load
                                   without memgpt-jax: ``from modeling_memgpt import Tokenizer``
    tokenizer.model                sentencepiece tokenizers: the model file itself
    .memgpt-export.json            the files the export wrote (only those may be replaced by --overwrite)

Export writes into a temporary directory renamed at the end, so a failure leaves
nothing that looks complete. :func:`import_torch` reads such a directory back
into our parameter tree (bit-exact).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from memgpt_jax import tasks
from memgpt_jax.attention import layout as L
from memgpt_jax.config import ModelConfig
from memgpt_jax.data import specials
from memgpt_jax.data.listops import LISTOPS_WORDS
from memgpt_jax.export import io, mapping, torch_model
from memgpt_jax.export.mapping import ConversionError
from memgpt_jax.export.torch_model import CONFIG_FILE, FORMAT, LAYOUT_FILE, TOKENIZER_FILE, WEIGHTS_FILE

FORMAT_VERSION = 1
SPM_FILE = "tokenizer.model"
MODELING_FILE = "modeling_memgpt.py"  # a copy of torch_model.py: loads the directory without memgpt-jax


def expected_params(config: ModelConfig, head: str) -> Any:
    """Our parameter tree of ``config``/``head`` as ``ShapeDtypeStruct``s (traced, not computed)."""
    if head not in tasks.names():
        raise ConversionError(f"unknown head {head!r}; choose one of {tasks.names()}")
    model = tasks.get(head).build(config)
    ids = jnp.zeros((1, min(config.max_len, 8)), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids))
    return nn.meta.unbox(shapes["params"])


def check_params(params: Any, config: ModelConfig, head: str, source: str) -> None:
    """Raises :class:`ConversionError` unless ``params`` has exactly the tree and shapes of ``config``."""
    want = {k: tuple(v.shape) for k, v in mapping.flatten(expected_params(config, head)).items()}
    have = {k: tuple(np.shape(v)) for k, v in mapping.flatten(params).items()}
    for path in sorted(set(want) | set(have)):
        if path not in have:
            raise ConversionError(f"{source}: parameter {path!r} is missing for the saved config")
        if path not in want:
            raise ConversionError(f"{source}: parameter {path!r} does not belong to the saved config")
        if want[path] != have[path]:
            raise ConversionError(f"{source}: parameter {path!r} has shape {have[path]}, config gives {want[path]}")


def layout_table(config: ModelConfig) -> dict[str, np.ndarray]:
    """The block table of the config's sparse layout over ``max_len`` (row-stable, so it
    serves every shorter length): ``mask_table [P, b, b]`` and ``tile_mask_ids [h, nq, nk]``;
    a derived layout, whose layers differ, gives ``tile_mask_ids [layers, heads, nq, nk]``
    (heads broadcast to the widest layer) over one shared ``mask_table``."""
    lays = [lay.require_causal("the exported model")
            for lay in L.layer_layouts(config.attention, config.n_layers, config.max_len, config.max_len)]
    if all(lay == lays[0] for lay in lays):
        lay = lays[0]
        return {"mask_table": np.asarray(lay.mask_table, bool), "tile_mask_ids": np.asarray(lay.tile_mask_ids, np.int32)}
    heads = max(lay.heads for lay in lays)
    table, ids = [], []
    for lay in lays:  # each layer's mask ids, shifted past the tables of the layers before it
        ids.append(np.broadcast_to(lay.tile_mask_ids + sum(len(t) for t in table), (heads, *lay.codes.shape[1:])))
        table.append(np.asarray(lay.mask_table, bool))
    return {"mask_table": np.concatenate(table), "tile_mask_ids": np.stack(ids).astype(np.int32)}


def standalone_tokenizer(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The tokenizer as the export writes it: everything ``torch_model.Tokenizer`` needs
    without memgpt-jax (the special ids; the ListOps words; the byte offset; the name of
    the sentencepiece model file written beside it)."""
    kind = spec.get("kind")
    out: dict[str, Any] = {"kind": kind, "num_special": specials.NUM_SPECIAL, "specials": {
        "pad": specials.PAD_ID, "bos": specials.BOS_ID, "eos": specials.EOS_ID, "sep": specials.SEP_ID,
        "unk": specials.UNK_ID}}
    if kind == "listops":
        out["words"] = list(LISTOPS_WORDS)
    elif kind == "sentencepiece":
        out["model_file"] = SPM_FILE
    elif kind != "bytes":
        raise ConversionError(f"the checkpoint's tokenizer has an unknown kind {kind!r}")
    return out


def write_tokenizer(directory: str, tokenizer: bytes | None) -> list[str]:
    """Writes the run's tokenizer so that PyTorch users can load it without memgpt-jax:
    ``memgpt_tokenizer.json`` and, for sentencepiece, the model file itself."""
    if not tokenizer:
        return []
    try:
        spec = json.loads(tokenizer.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConversionError("the checkpoint's tokenizer is not the JSON of Tokenizer.to_config()") from None
    io.write_json(os.path.join(directory, TOKENIZER_FILE), standalone_tokenizer(spec))
    files = [TOKENIZER_FILE]
    if spec.get("kind") == "sentencepiece":
        with open(os.path.join(directory, SPM_FILE), "wb") as f:
            f.write(base64.b64decode(spec["model_b64"]))
        files.append(SPM_FILE)
    return files


def export_torch(
    params: Any,
    config: ModelConfig,
    head: str,
    out: str,
    *,
    tokenizer: bytes | None = None,
    source: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Writes ``params`` of a ``config``/``head`` model as a torch-format directory ``out``."""
    check_params(params, config, head, "export")
    tensors, leftovers = mapping.to_target(params, "torch")
    assert not leftovers, leftovers  # every parameter has a torch name
    with io.atomic_directory(out, overwrite=overwrite) as tmp:
        io.save_tensors(os.path.join(tmp, WEIGHTS_FILE), tensors, {"format": "pt"})
        files = [WEIGHTS_FILE]
        if not config.attention.is_dense:
            io.save_tensors(os.path.join(tmp, LAYOUT_FILE), layout_table(config), {"format": "pt"})
            files.append(LAYOUT_FILE)
        shutil.copyfile(torch_model.__file__, os.path.join(tmp, MODELING_FILE))  # self-contained directory
        files += [MODELING_FILE] + write_tokenizer(tmp, tokenizer)
        io.write_json(os.path.join(tmp, CONFIG_FILE), {
            "format": FORMAT, "format_version": FORMAT_VERSION, "head": head, "model": config.to_dict(),
            "files": files + [CONFIG_FILE], "source": dict(source or {}),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
    return os.path.abspath(out)


def import_torch(directory: str) -> tuple[ModelConfig, str, Any]:
    """A torch-format directory -> ``(config, head, params)`` (NumPy arrays, bit-exact)."""
    meta = io.read_json(os.path.join(directory, CONFIG_FILE))
    if meta.get("format") != FORMAT:
        raise ConversionError(f"{directory}/{CONFIG_FILE}: format {meta.get('format')!r} is not {FORMAT!r}")
    for key in ("head", "model"):
        if key not in meta:
            raise ConversionError(f"{directory}/{CONFIG_FILE}: missing field {key!r}")
    try:
        config = ModelConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{directory}/{CONFIG_FILE}: invalid model config: {e}") from None
    weights = os.path.join(directory, WEIGHTS_FILE)
    tensors = io.load_tensors(weights)
    params = mapping.from_target(tensors, expected_params(config, meta["head"]), "torch", source=weights)
    return config, meta["head"], params


def read_tokenizer(directory: str) -> bytes | None:
    """The tokenizer bytes (as a checkpoint stores them: ``Tokenizer.to_config()``) of an
    exported directory, if any."""
    path = os.path.join(directory, TOKENIZER_FILE)
    if not os.path.isfile(path):
        return None
    spec = io.read_json(path)
    config = {"kind": spec.get("kind")}
    if config["kind"] == "sentencepiece":
        model = os.path.join(directory, spec.get("model_file", SPM_FILE))
        if "model_b64" in spec:  # written before the model file was the only copy
            config["model_b64"] = spec["model_b64"]
        elif os.path.isfile(model):
            with open(model, "rb") as f:
                config["model_b64"] = base64.b64encode(f.read()).decode("ascii")
        else:
            raise ConversionError(f"{path} names the sentencepiece model {model}, which is missing")
    return json.dumps(config).encode()
