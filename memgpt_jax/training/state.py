"""The train state: a plain pytree, so Orbax saves it and ``jit`` shards it.

``params`` are the student model's parameters (exactly what ``model.apply``
takes, what export converts); ``aux`` holds other trainable parameters that
are not part of the model (the learned projection of hidden-state
distillation). The optimizer state covers both. The teacher is never here.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    aux: Any
    opt_state: Any

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, aux: Any = None) -> "TrainState":
        aux = {} if aux is None else aux
        trainable = {"params": params, "aux": aux}
        return cls(step=jnp.zeros((), jnp.int32), params=params, aux=aux, opt_state=tx.init(trainable))

    def apply_gradients(self, grads: dict[str, Any], tx: optax.GradientTransformation) -> "TrainState":
        trainable = {"params": self.params, "aux": self.aux}
        updates, opt_state = tx.update(grads, self.opt_state, trainable)
        new = optax.apply_updates(trainable, updates)
        return self.replace(step=self.step + 1, params=new["params"], aux=new["aux"], opt_state=opt_state)
