"""Defaults shared by every config; each experiment file overrides what it needs.

Not a runnable config itself (no get_config). Config files import it as
`import base` (load_config puts configs/ on the path).
"""

import ml_collections


def optim(**overrides) -> dict:
    d = dict(lr=1e-3, schedule="cosine", warmup_steps=100, total_steps=0, end_lr_ratio=0.1,
             weight_decay=0.1, grad_clip=1.0, b1=0.9, b2=0.98, eps=1e-8)
    d.update(overrides)
    return d


def train(**overrides) -> dict:
    d = dict(steps=1000, accum_steps=1, seed=0, parallel="pjit", mesh=(-1, 1, 1), log_every=50,
             eval_every=0, checkpoint_every=500, keep=3, async_checkpoint=True, init_from="",
             prune_kind="none", prune_sparsity=0.5)
    d.update(overrides)
    return d


def distill(**overrides) -> dict:
    d = dict(teacher="", kind="forward_kl", temperature=2.0, alpha=0.5, beta=0.5,
             hidden_weight=0.0, hidden_kind="cosine", attention_weight=0.0, init_from_teacher=False,
             topk=0)
    d.update(overrides)
    return d


def data(**overrides) -> dict:
    d = dict(dataset="listops", name="", data_dir=None, tokenizer="listops", listops={},
             train_split="train", eval_split="validation", seq_len=128, batch_size=32,
             eval_batch_size=32, eval_batches=0, seed=0, text_key="text")
    d.update(overrides)
    return d


def config(task: str, model: dict, data: dict, optim: dict, train: dict, distill: dict) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(task=task, model=model, data=data, optim=optim, train=train,
                                          distill=distill))
