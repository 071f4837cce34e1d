"""Where a training step's time goes: attention, the model's GEMMs, the LM head.

    python -m benchmarks.step_parts                     # small_10m shapes, 4 x 1024 tokens, bf16

Times forward + backward (best of 3 after compilation) of: the whole model; the blocked
dense attention and the dense oracle alone (x n_layers); the QKV/out + MLP GEMMs alone
(x n_layers); the LM head with cross-entropy; and the blocked attention per layer at equal
FLOPs for several heads x head_dim splits. Prints tables; the figures guide the MFU work.
"""

from __future__ import annotations

import argparse
import time


def _best_ms(f, *args, n: int = 3) -> float:
    import jax

    jax.block_until_ready(f(*args))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from memgpt_jax import config as config_lib
    from memgpt_jax import model as model_lib
    from memgpt_jax.attention import make_attention_fn
    from memgpt_jax.config import AttentionConfig

    T, B = args.seq_len, args.batch
    cfg = config_lib.small_10m(max_len=T, compute_dtype="bfloat16").replace(
        attention=dict(pattern="dense", impl="xla", block_size=128))
    D, N, L, V, F = cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.vocab_size, cfg.mlp_dim
    model = model_lib.build(cfg)
    params, _ = model_lib.init(model, jax.random.key(0))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, V, (B, T)), jnp.int32)

    def loss(p):
        return -jnp.mean(jax.nn.log_softmax(model.apply({"params": p}, ids).logits)[..., 0])

    rows = [("whole model", _best_ms(jax.jit(jax.grad(loss)), params))]
    bf = lambda a: a.astype(jnp.bfloat16)  # noqa: E731
    x = jax.random.normal(jax.random.key(1), (B * T, D))
    head = lambda x, w: -jnp.mean(jax.nn.log_softmax(jnp.einsum(  # noqa: E731
        "nd,vd->nv", bf(x), bf(w), preferred_element_type=jnp.float32))[:, 0])
    rows.append(("LM head + cross-entropy", _best_ms(jax.jit(jax.grad(head, (0, 1))), x,
                                                      params["transformer"]["wte"]["embedding"])))

    def attention_ms(config: AttentionConfig, heads: int) -> float:
        fn = make_attention_fn(config)
        q = jax.random.normal(jax.random.key(2), (B, T, heads, D // heads), jnp.bfloat16)
        g = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)[0].astype(jnp.float32)), (0, 1, 2))
        return _best_ms(jax.jit(g), q, q, q)

    rows.append((f"attention, blocked kernel (x{L})", L * attention_ms(AttentionConfig(impl="xla"), N)))
    rows.append((f"attention, dense oracle (x{L})", L * attention_ms(AttentionConfig(), N)))
    w = [jax.random.normal(jax.random.key(i), s) for i, s in ((3, (D, 3 * D)), (4, (D, D)), (5, (D, F)), (6, (F, D)))]

    def gemms(x, wqkv, wo, w1, w2):
        mm = lambda a, b: jnp.dot(bf(a), bf(b), preferred_element_type=jnp.float32)  # noqa: E731
        return jnp.sum(mm(mm(x, wqkv)[:, :D], wo)) + jnp.sum(mm(jax.nn.gelu(mm(x, w1)), w2))

    rows.append((f"QKV/out + MLP GEMMs (x{L})", L * _best_ms(jax.jit(jax.grad(gemms, (0, 1, 2, 3, 4))), x, *w)))
    print(f"forward + backward, {B} x {T} tokens, bfloat16 compute, small_10m shapes")
    for name, ms in rows:
        print(f"  {name:34} {ms:9.0f} ms")
    print("blocked attention per layer, equal FLOPs:")
    for heads in (N, N // 2, N // 4):
        print(f"  {heads} heads x {D // heads:<4} {attention_ms(AttentionConfig(impl='xla'), heads):9.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
