"""Device meshes and the one table that maps logical axes to mesh axes.

Every parameter dimension has a logical name (``memgpt_jax.layers``). A mesh has
three axes, ``("data", "fsdp", "tensor")``; ``LOGICAL_RULES`` says which mesh
axes each logical axis is split over. Batches are split over ``data`` and
``fsdp`` together; parameters and optimizer state are split over ``fsdp``
(ZeRO-3 style) on their ``embed`` axis and over ``tensor`` on heads/MLP/vocab.
With ``fsdp = tensor = 1`` this is plain data parallelism.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from memgpt_jax.data.placement import to_global_arrays

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("position", None),
    ("labels", None),
    ("teacher_embed", None),
    ("length", None),
)


def make_mesh(shape: Sequence[int] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh. ``shape`` may use -1 once (all remaining devices);
    the default is all devices on ``data``. A shape smaller than the device count
    uses the first devices."""
    devices = list(devices or jax.devices())
    shape = list(shape or (-1, 1, 1))
    if len(shape) != 3:
        raise ValueError(f"train.mesh: expected 3 sizes (data, fsdp, tensor), got {shape}")
    if shape.count(-1) > 1:
        raise ValueError(f"train.mesh: at most one -1, got {shape}")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"train.mesh: {len(devices)} devices do not divide into {shape}")
        shape[shape.index(-1)] = len(devices) // known
    need = int(np.prod(shape))
    if need > len(devices):
        raise ValueError(f"train.mesh: {shape} needs {need} devices, have {len(devices)}")
    devices = devices[:need]  # e.g. (1, 1, 1): one device
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_to_sharding(logical_specs: Any, mesh: Mesh) -> Any:
    """Maps a tree of logical ``PartitionSpec``s to ``NamedSharding``s on ``mesh``."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, LOGICAL_RULES)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Batch arrays: leading axis over ``(data, fsdp)``, the rest replicated."""
    return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places a host batch on the mesh, rows over ``(data, fsdp)``. On several processes
    each passes its own slice of the global batch."""
    return to_global_arrays(batch, {k: batch_sharding(mesh, np.ndim(v)) for k, v in batch.items()})
