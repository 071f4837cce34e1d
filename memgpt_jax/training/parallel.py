"""Parallelism strategies: how the train step is compiled and where state and batches live.

The loop talks to one interface and never asks which strategy it has:

- :class:`MeshStrategy` (``train.parallel="pjit"``, the default): ``jax.jit`` with
  explicit ``NamedSharding``s over a ``(data, fsdp, tensor)`` mesh. Parameters
  follow the logical-axis rules of ``training/sharding.py``, optimizer moments
  follow their parameter, the state is donated. Works across hosts.
- :class:`PmapStrategy` (``train.parallel="pmap"``): data parallel over the local
  devices, one copy of the state per device, gradients summed with ``psum``.

Both run the same pure step (``steps.make_train_step``) and give bit-identical
results up to reduction order. A fork adds a strategy by implementing the five
methods of :class:`Strategy`.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import flax.linen as nn
import jax
import numpy as np

from memgpt_jax import model as model_lib
from memgpt_jax.data.placement import split_for_devices
from memgpt_jax.training import sharding as sharding_lib
from memgpt_jax.training.state import TrainState

# ``make_step(axis_name) -> train_step``: the pure step for a strategy's reduction axis (None: none).
StepFactory = Callable[[str | None], Callable[..., tuple[TrainState, dict[str, Any]]]]


class Strategy(Protocol):
    def place_state(self, state: TrainState) -> TrainState:
        """The state as checkpoints hold it (restores are shaped and sharded like this)."""

    def compile(self, state: TrainState, make_step: StepFactory, teacher: tuple[nn.Module, Any] | None
                ) -> tuple[TrainState, Any]:
        """Compiles the step; returns the state and the teacher parameters placed for it."""

    def place_batch(self, batch: dict[str, np.ndarray]) -> Any:
        """A host batch (this process's rows) on the devices."""

    def step(self, state: TrainState, batch: Any, rng: jax.Array, teacher_params: Any
             ) -> tuple[TrainState, dict[str, Any]]:
        """One train step; the metrics are global."""

    def saveable(self, state: TrainState) -> TrainState:
        """The state in the form ``place_state`` returns (for checkpoints and the caller)."""


class MeshStrategy:
    """``jax.jit`` over a device mesh with explicit shardings."""

    def __init__(self, mesh_shape: tuple[int, ...], model: nn.Module) -> None:
        self.mesh = sharding_lib.make_mesh(mesh_shape)
        self.param_sharding = sharding_lib.logical_to_sharding(model_lib.logical_axes(model), self.mesh)
        self.replicated = sharding_lib.replicated(self.mesh)
        self._step = None

    def _state_sharding(self, state: TrainState) -> TrainState:
        """Params by the logical rules; optimizer moments like their parameter (matched by
        key path); everything else (step, counts, aux) replicated."""
        by_path = {
            tuple(str(getattr(k, "key", k)) for k in path): sh
            for path, sh in jax.tree_util.tree_leaves_with_path(self.param_sharding)
        }

        def opt_leaf(path: tuple, leaf: Any) -> Any:
            keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
            if "params" in keys:
                sh = by_path.get(tuple(keys[keys.index("params") + 1:]))
                if sh is not None and len(sh.spec) <= np.ndim(leaf):
                    return sh
            return self.replicated

        return TrainState(
            step=self.replicated, params=self.param_sharding,
            aux=jax.tree.map(lambda _: self.replicated, state.aux),
            opt_state=jax.tree_util.tree_map_with_path(opt_leaf, state.opt_state),
        )

    def place_state(self, state: TrainState) -> TrainState:
        self.state_sharding = self._state_sharding(state)
        return jax.device_put(state, self.state_sharding)

    def compile(self, state: TrainState, make_step: StepFactory, teacher: tuple[nn.Module, Any] | None
                ) -> tuple[TrainState, Any]:
        teacher_sharding, teacher_params = None, None
        if teacher is not None:
            t_model, teacher_params = teacher
            teacher_sharding = sharding_lib.logical_to_sharding(model_lib.logical_axes(t_model), self.mesh)
            teacher_params = jax.device_put(teacher_params, teacher_sharding)
        self._step = jax.jit(
            make_step(None), in_shardings=(self.state_sharding, None, self.replicated, teacher_sharding),
            out_shardings=(self.state_sharding, self.replicated), donate_argnums=(0,),
        )
        return state, teacher_params

    def place_batch(self, batch: dict[str, np.ndarray]) -> Any:
        return sharding_lib.shard_batch(batch, self.mesh)

    def step(self, state: TrainState, batch: Any, rng: jax.Array, teacher_params: Any
             ) -> tuple[TrainState, dict[str, Any]]:
        return self._step(state, batch, rng, teacher_params)

    def saveable(self, state: TrainState) -> TrainState:
        return state


class PmapStrategy:
    """Data parallel over the local devices with ``jax.pmap``."""

    AXIS = "devices"

    def __init__(self) -> None:
        self.n_devices = jax.local_device_count()
        self._step = None

    def place_state(self, state: TrainState) -> TrainState:
        return state  # one copy; replicated per device by ``compile``

    def compile(self, state: TrainState, make_step: StepFactory, teacher: tuple[nn.Module, Any] | None
                ) -> tuple[TrainState, Any]:
        self._step = jax.pmap(make_step(self.AXIS), axis_name=self.AXIS, in_axes=(0, 0, None, None),
                              donate_argnums=(0,))
        replicated = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (self.n_devices, *np.shape(x))), state)
        return replicated, None if teacher is None else teacher[1]

    def place_batch(self, batch: dict[str, np.ndarray]) -> Any:
        return split_for_devices(batch, self.n_devices)

    def step(self, state: TrainState, batch: Any, rng: jax.Array, teacher_params: Any
             ) -> tuple[TrainState, dict[str, Any]]:
        state, metrics = self._step(state, batch, rng, teacher_params)
        return state, jax.tree.map(lambda x: x[0], metrics)  # psum'd: equal on every device

    def saveable(self, state: TrainState) -> TrainState:
        return jax.tree.map(lambda x: x[0], state)


def make_strategy(parallel: str, mesh_shape: tuple[int, ...], model: nn.Module) -> Strategy:
    """The strategy named by ``train.parallel``."""
    if parallel == "pmap":
        return PmapStrategy()
    return MeshStrategy(mesh_shape, model)
