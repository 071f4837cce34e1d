"""From a host batch to device layouts: the one copy, used by data and training alike.

A batch is a dict of NumPy arrays whose leading axis is this process's rows.
Two layouts:

- :func:`split_for_devices`: ``[B, ...] -> [num_devices, B / num_devices, ...]``,
  the input of ``jax.pmap``.
- :func:`to_global_arrays`: global ``jax.Array``s laid out by a sharding; on
  several processes each passes its own rows and the global batch is
  ``process_count`` times the local one. ``training.sharding.shard_batch`` is
  this with the mesh's batch axes.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def split_for_devices(batch: Mapping[str, np.ndarray], num_devices: int) -> dict[str, np.ndarray]:
    """Reshape each ``[B, ...]`` array to ``[num_devices, B // num_devices, ...]`` (pmap style)."""
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.shape[0] % num_devices:
            raise ValueError(f"batch {key!r} of {value.shape[0]} rows does not split over {num_devices} devices")
        out[key] = value.reshape(num_devices, value.shape[0] // num_devices, *value.shape[1:])
    return out


def to_global_arrays(batch: Mapping[str, np.ndarray], sharding: Any) -> dict[str, Any]:
    """This process's rows as global ``jax.Array``s (``jax.make_array_from_process_local_data``).

    ``sharding`` is one sharding for every array (e.g. ``NamedSharding(mesh, P("data"))``)
    or a dict with one per key. On one process this is ``jax.device_put``.
    """
    import jax  # lazy: the data commands and `memgpt-jax --help` run without importing JAX

    return jax.make_array_from_process_local_data(sharding, {k: np.asarray(v) for k, v in batch.items()})
