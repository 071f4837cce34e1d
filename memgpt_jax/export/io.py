"""Files for export and import: tensors to and from disk, and all-or-nothing directories.

NumPy is the exchange type on our side (bfloat16 as ``ml_dtypes.bfloat16``,
bit-exact both ways); tensors are written with ``safetensors`` and read from
safetensors (single or sharded) or a PyTorch ``.bin``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator, Mapping

import ml_dtypes
import numpy as np

from memgpt_jax.export.mapping import ConversionError


def to_torch(array: np.ndarray):
    """NumPy -> contiguous CPU ``torch.Tensor`` of the same dtype (bfloat16 bit-exact)."""
    import torch  # lazy: torch is the optional `torch` extra

    array = np.asarray(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(np.array(array).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.array(array))  # a writable copy (restored arrays may be read-only)


def to_numpy(tensor) -> np.ndarray:
    """``torch.Tensor`` -> NumPy of the same dtype (bfloat16 as ``ml_dtypes.bfloat16``)."""
    import torch  # lazy: the torch extra

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def save_tensors(path: str, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Writes NumPy ``tensors`` as one safetensors file (``metadata``: str -> str)."""
    from safetensors.torch import save_file  # lazy: the torch extra

    save_file({k: to_torch(v) for k, v in tensors.items()}, path, metadata=dict(metadata or {}))


def load_tensors(path: str) -> dict[str, np.ndarray]:
    """One safetensors file -> NumPy arrays."""
    from safetensors.torch import load_file  # lazy: the torch extra

    if not os.path.isfile(path):
        raise ConversionError(f"missing file {path}")
    return {k: to_numpy(v) for k, v in load_file(path).items()}


def load_state_dict_dir(directory: str) -> tuple[dict[str, np.ndarray], str]:
    """The weights of a Hugging Face model directory: ``(tensors, file description)``.

    Looks for ``model.safetensors``, a sharded ``model.safetensors.index.json``,
    then ``pytorch_model.bin`` (loaded with ``weights_only=True``).
    """
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    binary = os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(single):
        return load_tensors(single), single
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
            tensors.update(load_tensors(os.path.join(directory, shard)))
        return tensors, index
    if os.path.isfile(binary):
        import torch  # lazy: the torch extra

        state = torch.load(binary, map_location="cpu", weights_only=True)
        return {k: to_numpy(v) for k, v in state.items()}, binary
    raise ConversionError(
        f"{directory}: no weights found (expected model.safetensors, model.safetensors.index.json "
        "or pytorch_model.bin)"
    )


def read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConversionError(f"missing file {path}")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ConversionError(f"{path} is not valid JSON: {e}") from None


def write_json(path: str, data: Mapping) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


MARKER = ".memgpt-export.json"  # what an export wrote: the only files --overwrite may replace


def check_replaceable(out: str, *, overwrite: bool) -> None:
    """Raises :class:`ConversionError` unless ``out`` may be written: it does not exist, or
    ``overwrite`` is set and it is an earlier export holding only the files it wrote (its
    marker lists them). Call it before the work, so a refusal costs nothing."""
    out = os.path.abspath(out)
    if not os.path.lexists(out):
        return
    if not overwrite:
        raise ConversionError(f"output {out} already exists; choose a new --out, or pass --overwrite to replace "
                              "an earlier export")
    cwd = os.path.abspath(os.getcwd())
    if cwd == out or cwd.startswith(out + os.sep):
        raise ConversionError(f"--out {out} is the current directory or holds it; choose another --out")
    marker = os.path.join(out, MARKER)
    if not os.path.isdir(out) or not os.path.isfile(marker):
        raise ConversionError(f"--overwrite: {out} was not written by memgpt-jax export (no {MARKER}); "
                              "it is left untouched, choose a new --out")
    with open(marker, encoding="utf-8") as f:
        written = set(json.load(f).get("files", []))
    found = {os.path.relpath(os.path.join(root, name), out)
             for root, _, names in os.walk(out) for name in names} - {MARKER}
    extra = sorted(found - written)
    if extra:
        raise ConversionError(f"--overwrite: {out} holds files the export did not write ({', '.join(extra[:3])}"
                              f"{' ...' if len(extra) > 3 else ''}); move them away or choose a new --out")


@contextlib.contextmanager
def atomic_directory(out: str, *, overwrite: bool = False) -> Iterator[str]:
    """Yields a fresh temporary directory next to ``out``; renames it to ``out`` on success.

    On any exception the temporary directory is removed, so a failed export never
    leaves a directory that looks complete. The finished directory gets a marker
    listing its files and the permissions of the user's umask. With ``overwrite``, an
    earlier export (see :func:`check_replaceable`) is replaced only after the new one
    is fully written; anything else is refused.
    """
    out = os.path.abspath(out)
    check_replaceable(out, overwrite=overwrite)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        yield tmp
        files = sorted(os.path.relpath(os.path.join(root, name), tmp)
                       for root, _, names in os.walk(tmp) for name in names)
        write_json(os.path.join(tmp, MARKER), {"files": files})
        _apply_umask(tmp)
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rename(out, os.path.join(old, "replaced"))
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _apply_umask(directory: str) -> None:
    """Gives ``directory`` and what it holds the modes a plain ``mkdir``/``open`` would
    (``mkdtemp`` and some writers use 0700/0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for root, dirs, names in os.walk(directory):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~umask)
        for name in names:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)
