"""benchmarks/step_gemms.py: the products a traced step runs, their einsum and FLOPs."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import step_gemms  # noqa: E402
from memgpt_jax.layers import matmul  # noqa: E402


def test_collect_counts_scanned_products_and_the_backward_copies():
    w = jnp.ones((3, 16, 16), jnp.bfloat16)  # three scanned layers

    def loss(w, x):
        def layer(h, wi):
            return matmul(h, wi).astype(jnp.bfloat16), None
        h, _ = jax.lax.scan(layer, x, w)
        return h.astype(jnp.float32).sum()

    jaxpr = jax.make_jaxpr(jax.grad(loss))(w, jnp.ones((8, 16), jnp.bfloat16)).jaxpr
    dots, copies, loops = step_gemms.collect(jaxpr)
    # per layer: the forward x @ w, then dx = g @ w^T and dw = x^T @ g: 3 x 3 products
    assert sum(dots.values()) == 9 and not loops
    assert all(key[1] == key[3] == "bfloat16" and key[5] == "float32" for key in dots)
    if jax.default_backend() == "cpu":  # w^T and x^T materialised, once per layer each
        assert sum(copies.values()) == 6


def test_einsum_spec_and_flops_match_dot_general():
    rng = np.random.default_rng(0)
    cases = [((4, 5), (5, 6), (((1,), (0,)), ((), ()))),            # x @ w
             ((5, 4), (5, 6), (((0,), (0,)), ((), ()))),            # x^T @ g
             ((2, 3, 5), (2, 4, 5), (((2,), (2,)), ((0,), (0,))))]  # batched q k^T
    for lhs, rhs, dims in cases:
        a, b = rng.standard_normal(lhs).astype(np.float32), rng.standard_normal(rhs).astype(np.float32)
        spec = step_gemms.einsum_spec(len(lhs), len(rhs), dims)
        np.testing.assert_allclose(np.einsum(spec, a, b), np.asarray(jax.lax.dot_general(a, b, dims)), rtol=1e-4, atol=1e-5)
    assert step_gemms.dot_flops((4, 5), (5, 6), cases[0][2]) == 2 * 4 * 5 * 6
    assert step_gemms.dot_flops((2, 3, 5), (2, 4, 5), cases[2][2]) == 2 * 2 * 3 * 4 * 5
