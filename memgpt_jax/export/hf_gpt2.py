"""Hugging Face GPT-2: export our dense models, import GPT-2 checkpoints.

Export (``--format hf-gpt2``) writes a directory that ``transformers`` loads
as is::

    config.json, model.safetensors      GPT2LMHeadModel | GPT2ForSequenceClassification
                                        | GPT2ForQuestionAnswering (by the model's head)
    classifier_head.safetensors         classification: score.weight and score.bias
                                        (HF's ``score`` has no bias; add it to HF's logits)

GPT-2 cannot express block-sparse layouts, rotary positions, RMSNorm,
grouped-query attention, bias-free projections or mean pooling; exporting a
model that uses one fails before anything is written, naming the option. The
activation (``gelu_tanh`` is GPT-2's ``gelu_new``; ``gelu``, ``relu``, ``silu``)
and an untied LM head (``tie_word_embeddings: false``) are expressible.

HF pools a sequence on its rightmost token that is not ``pad_token_id``; ours
pools the last token with ``kv_valid`` true. They agree when padding tokens are
``pad_id`` (exported as ``pad_token_id``) and real tokens never are.

Import (:func:`import_hf_gpt2`) reads a GPT-2 directory (``model.safetensors``,
sharded safetensors or ``pytorch_model.bin``; keys with or without the
``transformer.`` prefix) into our ``ModelConfig`` and parameter tree;
:func:`open_hf_run` makes it a :class:`~memgpt_jax.training.run.Run` (a
distillation teacher given as ``distill.teacher=hf:DIR``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from memgpt_jax import data as data_lib
from memgpt_jax import tasks
from memgpt_jax.config import ModelConfig
from memgpt_jax.data import specials
from memgpt_jax.export import io, mapping
from memgpt_jax.export.mapping import ConversionError
from memgpt_jax.export.torch_format import check_params, expected_params, read_tokenizer, write_tokenizer
from memgpt_jax.run_config import DataConfig, RunConfig
from memgpt_jax.training.run import Run

CLASSIFIER_FILE = "classifier_head.safetensors"
# The GPT-2 architectures a task may declare (``Task.hf_architecture``) and what each needs here.
LM, CLASSIFIER, SPANS = "GPT2LMHeadModel", "GPT2ForSequenceClassification", "GPT2ForQuestionAnswering"
_SAME_AS = {"GPT2Model": LM}  # a bare GPT-2 body imports as a language model (the tied head)


def architecture(head: str) -> str:
    """The Hugging Face class of task ``head``'s model (its ``hf_architecture``)."""
    if head not in tasks.names():
        raise ConversionError(f"unknown head {head!r}; choose one of {tasks.names()}")
    arch = tasks.get(head).hf_architecture
    if arch not in (LM, CLASSIFIER, SPANS):
        raise ConversionError(f"task {head!r} declares no GPT-2 architecture; use --format torch")
    return arch


def _heads_of_architectures() -> dict[str, str]:
    heads = {tasks.get(n).hf_architecture: n for n in tasks.names() if tasks.get(n).hf_architecture}
    return {**heads, **{alias: heads[arch] for alias, arch in _SAME_AS.items() if arch in heads}}
_ACT_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}
_ACT_FROM_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                "relu": "relu", "silu": "silu", "swish": "silu"}


def gpt2_incompatibilities(config: ModelConfig, head: str) -> list[str]:
    """The options of ``config`` that a Hugging Face GPT-2 model cannot express (empty if none)."""
    problems = []
    if not config.attention.is_dense:
        problems.append(f"attention.pattern={config.attention.pattern!r} (a block-sparse layout; GPT-2 "
                        "attends densely)")
    if config.position != "learned":
        problems.append(f"position={config.position!r} (GPT-2 has learned positions)")
    if config.norm != "layernorm":
        problems.append(f"norm={config.norm!r} (GPT-2 uses LayerNorm)")
    if config.kv_heads != config.n_heads:
        problems.append(f"n_kv_heads={config.n_kv_heads} (grouped-query attention; GPT-2 fuses equal q, k, v)")
    if not config.use_bias:
        problems.append("use_bias=False (GPT-2's projections have biases)")
    arch = architecture(head)
    if arch == LM and config.copy_dim:
        problems.append(f"copy_dim={config.copy_dim} (a copy head; GPT2LMHeadModel has only the vocabulary head)")
    if arch == CLASSIFIER and config.pooling != "last":
        problems.append(f"pooling={config.pooling!r} (GPT2ForSequenceClassification pools the last token)")
    return problems


def hf_config(config: ModelConfig, head: str, *, special_ids: dict[str, int] | None = None) -> dict[str, Any]:
    """The ``config.json`` of the Hugging Face GPT-2 model equal to ``config``/``head``."""
    out: dict[str, Any] = {
        "model_type": "gpt2",
        "architectures": [architecture(head)],
        "vocab_size": config.vocab_size,
        "n_positions": config.max_len,
        "n_embd": config.d_model,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": config.d_ff,  # None: 4 * n_embd, in both libraries
        "activation_function": _ACT_TO_HF[config.activation],
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_range": config.init_std,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": 0.0,  # ours has no attention-probability dropout
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": config.tie_embeddings,
        "use_cache": True,
        "pad_token_id": config.pad_id,
        "bos_token_id": None,  # GPT2Config's default (50256) is outside small vocabularies
        "eos_token_id": None,
        "dtype": config.param_dtype,
    }
    out.update(special_ids or {})
    if architecture(head) == CLASSIFIER:
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(config.num_labels)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(config.num_labels)}
        out["memgpt_jax"] = {"score_bias_file": CLASSIFIER_FILE, "pooling": config.pooling}
    return out


def export_hf_gpt2(
    params: Any, config: ModelConfig, head: str, out: str, *, tokenizer: bytes | None = None,
    overwrite: bool = False,
) -> str:
    """Writes ``params`` as a Hugging Face GPT-2 directory ``out`` (see the module docstring)."""
    problems = gpt2_incompatibilities(config, head)
    if problems:
        raise ConversionError(
            "--format hf-gpt2 cannot express " + "; ".join(problems) + ". Use --format torch, which keeps every option."
        )
    check_params(params, config, head, "export")
    tensors, leftovers = mapping.to_target(params, "hf")
    special = None
    if tokenizer:  # our tokenizers share the special ids of memgpt_jax.data.specials
        special = {"bos_token_id": specials.BOS_ID, "eos_token_id": specials.EOS_ID}
    with io.atomic_directory(out, overwrite=overwrite) as tmp:
        io.save_tensors(os.path.join(tmp, "model.safetensors"), tensors, {"format": "pt"})
        if architecture(head) == CLASSIFIER:
            io.save_tensors(os.path.join(tmp, CLASSIFIER_FILE), {
                "score.weight": tensors["score.weight"], "score.bias": leftovers.pop("score/bias"),
            }, {"format": "pt"})
        if leftovers:
            raise ConversionError(f"parameters {sorted(leftovers)} have no place in a GPT-2 checkpoint")
        write_tokenizer(tmp, tokenizer)
        io.write_json(os.path.join(tmp, "config.json"), hf_config(config, head, special_ids=special))
    return os.path.abspath(out)


def config_from_hf(hf: dict[str, Any], *, source: str, param_dtype: str = "float32") -> tuple[ModelConfig, str]:
    """``(ModelConfig, head)`` of a Hugging Face GPT-2 ``config.json``."""
    if hf.get("model_type") != "gpt2":
        raise ConversionError(f"{source}: model_type is {hf.get('model_type')!r}, expected 'gpt2'")
    act = hf.get("activation_function", "gelu_new")
    if act not in _ACT_FROM_HF:
        raise ConversionError(f"{source}: activation_function={act!r} has no memgpt-jax equivalent "
                              f"(supported: {sorted(_ACT_FROM_HF)})")
    for key, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                      ("add_cross_attention", False)):
        if bool(hf.get(key, want)) != want:
            raise ConversionError(f"{source}: {key}={hf[key]} is not supported (memgpt-jax needs {want})")
    archs = hf.get("architectures") or [LM]
    heads = _heads_of_architectures()
    if archs[0] not in heads:
        raise ConversionError(f"{source}: architecture {archs[0]!r} is not one of {sorted(heads)}")
    vocab = int(hf.get("vocab_size", 50257))
    pad = hf.get("pad_token_id")
    n_labels = len(hf["id2label"]) if hf.get("id2label") else int(hf.get("num_labels", 2))
    try:
        config = ModelConfig(
            vocab_size=vocab, d_model=int(hf.get("n_embd", 768)), n_layers=int(hf.get("n_layer", 12)),
            n_heads=int(hf.get("n_head", 12)), d_ff=hf.get("n_inner"), max_len=int(hf.get("n_positions", 1024)),
            dropout=float(hf.get("resid_pdrop", 0.1)), layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            activation=_ACT_FROM_HF[act], init_std=float(hf.get("initializer_range", 0.02)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)), num_labels=n_labels,
            pad_id=int(pad) if isinstance(pad, int) and 0 <= pad < vocab else 0,
            param_dtype=param_dtype,
        )
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{source}: cannot build a ModelConfig: {e}") from None
    return config, heads[archs[0]]


def import_hf_gpt2(directory: str, head: str | None = None) -> tuple[ModelConfig, Any]:
    """A Hugging Face GPT-2 directory -> ``(ModelConfig, params)`` (NumPy arrays).

    ``head`` defaults to the one of the checkpoint's architecture (``lm`` for
    ``GPT2LMHeadModel``/``GPT2Model``); an LM head is the tied ``wte`` unless the
    config unties it. A classifier's bias comes from ``classifier_head.safetensors``
    when present (our exports), else zeros (HF's ``score`` has none).
    """
    if not os.path.isdir(directory):
        raise ConversionError(f"{directory} is not a directory")
    hf = io.read_json(os.path.join(directory, "config.json"))
    tensors, weights = io.load_state_dict_dir(directory)
    if not any(k.startswith("transformer.") for k in tensors):  # the original GPT-2 files omit it
        tensors = {(k if k.split(".")[0] in ("lm_head", "score", "qa_outputs") else f"transformer.{k}"): v
                   for k, v in tensors.items()}
    wte = tensors.get("transformer.wte.weight")
    if wte is None:
        raise ConversionError(f"{weights}: missing tensor 'transformer.wte.weight'")
    dtype = np.dtype(wte.dtype).name
    config, arch_head = config_from_hf(hf, source=f"{directory}/config.json",
                                       param_dtype=dtype if dtype in ("float32", "bfloat16", "float16") else "float32")
    head = head or arch_head
    if wte.shape[0] != config.vocab_size:
        raise ConversionError(f"{weights}: tensor 'transformer.wte.weight' has {wte.shape[0]} rows but "
                              f"config.json says vocab_size={config.vocab_size}")
    ignore = [k for k in tensors if k.endswith((".attn.bias", ".attn.masked_bias"))]  # old causal buffers
    if config.tie_embeddings and "lm_head.weight" in tensors:
        if not np.array_equal(tensors["lm_head.weight"], wte):
            raise ConversionError(f"{weights}: config ties the embeddings but 'lm_head.weight' differs from "
                                  "'transformer.wte.weight'; set tie_word_embeddings=false")
        ignore.append("lm_head.weight")
    defaults = {}
    if architecture(head) == CLASSIFIER:
        side = os.path.join(directory, CLASSIFIER_FILE)
        if os.path.isfile(side):
            bias = io.load_tensors(side).get("score.bias")
            if bias is None:
                raise ConversionError(f"{side}: missing tensor 'score.bias'")
        else:
            bias = np.zeros((config.num_labels,), wte.dtype)
        defaults["score/bias"] = bias
    params = mapping.from_target(tensors, expected_params(config, head), "hf", source=weights,
                                 ignore=ignore, defaults=defaults)
    return config, params


def imported_run_config(config: ModelConfig, head: str) -> RunConfig:
    """The run config saved with (or standing for) an imported model: its task and model,
    defaults elsewhere, sequences up to ``max_len``. It names no tokenizer: an imported
    checkpoint carries its own or none (opening it then says so instead of guessing one)."""
    return RunConfig(task=head, model=config,
                     data=DataConfig(seq_len=min(DataConfig.seq_len, config.max_len), tokenizer=""))


def open_hf_run(directory: str, task: str | None = None) -> Run:
    """A Hugging Face GPT-2 directory as a :class:`Run` (converted on load, not saved):
    what ``distill.teacher=hf:DIR`` names. ``task`` picks the head (default: the
    checkpoint's architecture); ``tokenizer`` is ``None`` unless the directory holds
    one of ours (an export of a memgpt-jax run)."""
    config, params = import_hf_gpt2(directory, task)
    head = task or config_from_hf(io.read_json(os.path.join(directory, "config.json")), source=directory)[1]
    blob = read_tokenizer(directory)
    tokenizer = data_lib.tokenizer_from_config(json.loads(blob.decode("utf-8"))) if blob else None
    return Run(path=os.path.abspath(directory), step=0,
               config=imported_run_config(config, head),
               model=tasks.get(head).build(config), params=params, tokenizer=tokenizer, quantization=None)
