"""Character-level (byte) language model on tiny Shakespeare.

    memgpt-jax data prepare text --files $MEMGPT_SHARED_DATA/tinyshakespeare.txt --name shakespeare
    memgpt-jax pretrain --config configs/shakespeare.py --workdir runs/shakespeare
    memgpt-jax pretrain --config configs/shakespeare.py:tiny --workdir runs/shakespeare_tiny   # seconds

Variants: `base` (dense, ~10M parameters, 512 tokens), `sparse` (the same with
causal window+global block-sparse attention), `small` (~1.9M parameters, 256 tokens:
CPU minutes; the compression benchmark's model), `tiny` (CPU smoke run).
"""

from memgpt_jax import run_config

MODELS = {
    "base": dict(vocab_size=264, d_model=384, n_layers=6, n_heads=6, max_len=512, dropout=0.1,
                 attention=dict(pattern="dense", block_size=64)),
    "sparse": dict(vocab_size=264, d_model=384, n_layers=6, n_heads=6, max_len=512, dropout=0.1,
                   attention=dict(pattern="window_global", block_size=64, window=2, n_global=1)),
    "small": dict(vocab_size=264, d_model=192, n_layers=4, n_heads=6, max_len=256, dropout=0.1,
                  attention=dict(pattern="dense", block_size=64)),
    "tiny": dict(vocab_size=264, d_model=64, n_layers=2, n_heads=4, max_len=128, dropout=0.0,
                 attention=dict(pattern="dense", block_size=32)),
}


def get_config(arg: str = "base"):
    if arg not in MODELS:
        raise ValueError(f"configs/shakespeare.py: variant {arg!r} not in {sorted(MODELS)}")
    tiny = arg == "tiny"
    config = run_config.defaults("lm")
    config.model.update(MODELS[arg], compute_dtype="bfloat16")
    config.data.update(dataset="text", name="memgpt_text/shakespeare", tokenizer="bytes",
                       seq_len=MODELS[arg]["max_len"], batch_size=8 if tiny else 32,
                       eval_batch_size=8 if tiny else 32, eval_batches=4 if tiny else 20)
    config.optim.update(lr=3e-3 if tiny else 1e-3, warmup_steps=10 if tiny else 200, b2=0.99)
    config.train.update(steps=50 if tiny else 5000, log_every=10 if tiny else 50, eval_every=50 if tiny else 500,
                        checkpoint_every=50 if tiny else 500)
    if arg == "small":
        config.data.update(batch_size=16, eval_batch_size=16, eval_batches=40)
        config.optim.update(lr=2e-3, warmup_steps=100)
        config.train.update(steps=1500, eval_every=500, checkpoint_every=250)
    return config
