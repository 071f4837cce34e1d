"""PyTorch peer of benchmarks/train_step.py: one training step of an exported model.

Runs in its own process (never imports JAX) so both frameworks get the machine's
threads in turn. Loads ``memgpt-jax export --format torch`` output with the fused
attention (``TorchGPT(..., attention_impl="sdpa")``: ``is_causal`` for dense models,
the layout's boolean token mask for block-sparse ones), then times AdamW steps
(forward, cross-entropy, backward, update) on random tokens, eager or
``torch.compile``d, in float32 or under bfloat16 autocast; ``--forward-only`` times the
forward and the loss alone (the FlexAttention peer: ``--attention-impl flex``, the
layout's ``BlockMask``, ``torch.compile(flex_attention)`` inside an eager model, as
FlexAttention is meant to run). Prints one JSON line::

    .venv/bin/python benchmarks/torch_train_step.py --export DIR --seq-len 1024 --batch 4 --mode eager
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from types import SimpleNamespace

from memgpt_jax.hostmem import tune_host_allocator

tune_host_allocator()  # before torch starts a thread; the parent sets MEMGPT_ALLOCATOR to its own setting
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from memgpt_jax.export import torch_model  # noqa: E402
from memgpt_jax.export.torch_model import TorchGPT  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", required=True, help="directory written by `memgpt-jax export --format torch`")
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--mode", choices=("eager", "compile"), default="eager")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--attention-impl", choices=("sdpa", "flex", "none"), default="sdpa",
                   help="sdpa: the fused kernel (is_causal, or the layout's token mask); flex: FlexAttention with the "
                        "layout's BlockMask (forward only on CPU: torch has no CPU backward for it); none: a "
                        "diagnostic, the attention's output is V itself (the step's floor without attention)")
    p.add_argument("--forward-only", action="store_true", help="time the forward and the loss, without gradients")
    args = p.parse_args()
    if args.attention_impl == "flex" and not (args.forward_only and args.mode == "eager"):
        p.error("--attention-impl flex runs forward only on CPU (--forward-only), in an eager model whose "
                "FlexAttention is compiled (--mode eager)")

    torch.manual_seed(0)
    if args.attention_impl == "none":  # SDPA's call site returns V: projections, MLP, norms, head stay
        torch_model.F = SimpleNamespace(**{**{n: getattr(F, n) for n in dir(F) if not n.startswith("__")},
                                           "scaled_dot_product_attention": lambda q, k, v, **_: v})
    model = TorchGPT.from_pretrained(args.export, attention_impl="sdpa" if args.attention_impl == "none"
                                     else args.attention_impl).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    V = model.config.vocab_size
    ids = torch.randint(0, V, (args.batch, args.seq_len + 1))
    x, y = ids[:, :-1], ids[:, 1:]

    def forward() -> float:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
            logits = model(x).logits
            return float(F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1)))

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
            logits = model(x).logits
            loss = F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    fn = forward if args.forward_only else step
    run = torch.compile(fn) if args.mode == "compile" else fn
    t0 = time.perf_counter()
    run()  # warm-up (compilation for torch.compile)
    compile_s = time.perf_counter() - t0
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / max(args.repeats, 1)
    print(json.dumps({"step_s": statistics.median(times), "compile_s": compile_s, "threads": torch.get_num_threads(),
                      "faults_per_step": faults, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
