"""The training loop: pretraining, fine-tuning and distillation share it.

``train(config, workdir)`` builds the model, the optimizer, the parallel step
(pjit over a mesh, or pmap), restores the newest good checkpoint in
``workdir`` if there is one (train state *and* data-iterator state, so a resumed
run sees exactly the batches an uninterrupted run would), and trains. It shows
a progress bar (loss, tokens/s, MFU, ETA), writes ``metrics.jsonl`` and
TensorBoard event files, evaluates every ``train.eval_every`` steps, and stops
with a clear message, keeping the last good checkpoint, if the loss turns NaN/Inf.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memgpt_jax import model as model_lib
from memgpt_jax.config import ModelConfig
from memgpt_jax.flops import count_params, flops_per_token, measured_peak_flops
from memgpt_jax.training import inputs as inputs_lib
from memgpt_jax.training import sharding as sharding_lib
from memgpt_jax.training.checkpoint import Checkpointer, load_params
from memgpt_jax.training.optim import make_optimizer
from memgpt_jax.training.state import TrainState
from memgpt_jax.training.steps import AXIS, DistillSettings, make_eval_step, make_loss_fn, make_train_step
from memgpt_jax.training.teacher import init_student_from_teacher, load_teacher


# Test hook: SIGKILL this process right after the given step (tests/test_training.py).
_KILL_AT = os.environ.get("MEMGPT_FAULT_KILL_AT_STEP")


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB (Linux ``VmHWM``; else ``getrusage``)."""
    try:
        with open("/proc/self/status") as f:
            return next(float(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        except (ImportError, OSError):
            return None


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; the message names the last good checkpoint."""


def _to_dict(config: Any) -> dict[str, Any]:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def replicate(tree: Any, n: int) -> Any:
    """A copy per local device along a new leading axis (for pmap)."""
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), tree)


class MetricWriter:
    """``metrics.jsonl`` plus TensorBoard event files (tensorboardX, no TensorFlow)."""

    def __init__(self, workdir: str, enabled: bool = True) -> None:
        self.enabled = enabled and jax.process_index() == 0
        self.tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        except ImportError:  # pragma: no cover - tensorboardX is a declared dependency
            self.tb = None

    def write(self, step: int, prefix: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "split": prefix, **metrics}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()


class Trainer:
    """Holds the compiled steps and state for one run (see ``train``)."""

    def __init__(self, config: Any, workdir: str, *, progress: bool = True) -> None:
        self.config = config
        self.workdir = workdir
        self.progress = progress and jax.process_index() == 0
        self.task = config.task
        self.model_config = ModelConfig.from_dict(_to_dict(config.model))
        self.head = {"lm": "lm", "classification": "classification", "qa": "qa"}[self.task]
        self.model = model_lib.build(self.model_config, self.head)
        tc = config.train
        self.steps_total = int(tc.steps)
        self.accum = int(tc.get("accum_steps", 1))
        self.parallel = str(tc.get("parallel", "pjit"))
        if self.parallel not in ("pjit", "pmap"):
            raise ValueError(f"train.parallel: choose 'pjit' or 'pmap', got {self.parallel!r}")
        self.tx, self.schedule = make_optimizer(_to_dict(config.optim), self.steps_total)
        self.prune_kind = str(tc.get("prune_kind", "none"))
        if self.prune_kind != "none":  # recovery fine-tuning: pruned weights stay exactly zero
            from memgpt_jax.compress.prune import freeze_zeros

            self.tx = optax.chain(self.tx, freeze_zeros())
        self.rng = jax.random.key(int(tc.get("seed", 0)))

        # Teacher (distillation): outside the student's state, never saved with it.
        self.teacher_model, self.teacher_params, self.distill = None, None, None
        dc = config.get("distill")
        if dc is not None and dc.get("teacher"):
            self.teacher_model, self.teacher_params, self.teacher_config = load_teacher(dc.teacher, self.head)
            if self.task == "lm" and self.teacher_config.vocab_size != self.model_config.vocab_size:
                raise ValueError(f"distill.teacher={dc.teacher}: vocabulary {self.teacher_config.vocab_size} differs "
                                 f"from the student's model.vocab_size={self.model_config.vocab_size}")
            if self.task != "lm" and self.teacher_config.num_labels != self.model_config.num_labels:
                raise ValueError(f"distill.teacher={dc.teacher}: {self.teacher_config.num_labels} labels, "
                                 f"the student has model.num_labels={self.model_config.num_labels}")
            self.distill = DistillSettings(
                kind=dc.get("kind", "forward_kl"), temperature=float(dc.get("temperature", 2.0)),
                alpha=float(dc.get("alpha", 0.5)), beta=float(dc.get("beta", 0.5)),
                hidden_weight=float(dc.get("hidden_weight", 0.0)), hidden_kind=dc.get("hidden_kind", "cosine"),
                attention_weight=float(dc.get("attention_weight", 0.0)), topk=int(dc.get("topk", 0)),
            )
        step_teacher = None if self.distill is not None and self.distill.topk else self.teacher_model
        loss_fn = make_loss_fn(self.task, self.model, self.distill, step_teacher)
        step_fn = make_train_step(loss_fn, self.tx, self.schedule, accum_steps=self.accum, pmap=self.parallel == "pmap")
        eval_fn = make_eval_step(self.task, self.model, pmap=self.parallel == "pmap")
        self._build_parallel(step_fn, eval_fn)

    # -- state -------------------------------------------------------------------------
    def _init_params(self) -> tuple[Any, Any]:
        params, _ = model_lib.init(self.model, jax.random.fold_in(self.rng, 1))
        init_from = self.config.train.get("init_from")
        if init_from:  # e.g. a classifier from a pretrained language model's backbone
            pretrained, _ = load_params(init_from)
            if jax.tree.map(np.shape, pretrained) == jax.tree.map(np.shape, params):
                params = jax.tree.map(np.asarray, pretrained)  # the whole model, head included
                print(f"initialised every parameter from {init_from}", file=sys.stderr)
            elif jax.tree.map(np.shape, pretrained["transformer"]) == jax.tree.map(np.shape, params["transformer"]):
                params = {**params, "transformer": pretrained["transformer"]}
                print(f"initialised the transformer from {init_from}", file=sys.stderr)
            else:
                raise ValueError(f"train.init_from={init_from}: its transformer differs in shape from this model's")
        if self.prune_kind != "none":
            from memgpt_jax.compress.prune import apply_masks, magnitude_masks, sparsity

            params = apply_masks(params, magnitude_masks(params, float(self.config.train.get("prune_sparsity", 0.5)),
                                                         self.prune_kind))
            print(f"pruned ({self.prune_kind}): {sparsity(params)}", file=sys.stderr)
        dc = self.config.get("distill")
        if self.teacher_params is not None and dc is not None and dc.get("init_from_teacher"):
            params = init_student_from_teacher(params, self.teacher_params, self.model_config, self.teacher_config)
        aux = {}
        if self.distill is not None and self.distill.hidden_weight > 0:
            if self.teacher_config.d_model != self.model_config.d_model:
                from memgpt_jax.training.losses import HiddenProjection

                dummy = jnp.zeros((1, 1, self.model_config.d_model))
                proj = HiddenProjection(self.teacher_config.d_model).init(jax.random.fold_in(self.rng, 2), dummy)
                aux = {"hidden_proj": jax.tree.map(lambda x: getattr(x, "value", x), proj["params"],
                                                   is_leaf=lambda x: hasattr(x, "value"))}
        return params, aux

    def _build_parallel(self, step_fn: Callable, eval_fn: Callable) -> None:
        if self.parallel == "pmap":
            self.n_dev = jax.local_device_count()
            self.p_step = jax.pmap(step_fn, axis_name=AXIS, in_axes=(0, 0, None, None), donate_argnums=(0,))
            self.p_eval = jax.pmap(eval_fn, axis_name=AXIS, in_axes=(0, 0))
            self.mesh = None
            return
        self.mesh = sharding_lib.make_mesh(tuple(self.config.train.get("mesh", (-1, 1, 1))))
        self.param_sharding = sharding_lib.logical_to_sharding(model_lib.logical_axes(self.model), self.mesh)
        rep = sharding_lib.replicated(self.mesh)
        self._step_fn, self._eval_fn = step_fn, eval_fn
        self.rep = rep

    def _state_sharding(self, state: TrainState) -> Any:
        """Params by the logical rules; optimizer moments like their parameter (matched by
        key path); everything else (step, counts, aux) replicated."""
        by_path = {
            tuple(str(getattr(k, "key", k)) for k in path): sh
            for path, sh in jax.tree_util.tree_leaves_with_path(self.param_sharding)
        }

        def opt_leaf(path: tuple, leaf: Any) -> Any:
            keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
            if "params" in keys:
                sh = by_path.get(tuple(keys[keys.index("params") + 1 :]))
                if sh is not None and len(sh.spec) <= np.ndim(leaf):
                    return sh
            return self.rep

        return TrainState(
            step=self.rep, params=self.param_sharding, aux=jax.tree.map(lambda _: self.rep, state.aux),
            opt_state=jax.tree_util.tree_map_with_path(opt_leaf, state.opt_state),
        )

    def init_state(self) -> TrainState:
        params, aux = self._init_params()
        state = TrainState.create(params, self.tx, aux)
        if self.parallel == "pmap":
            return state
        self.state_sharding = self._state_sharding(state)
        state = jax.device_put(state, self.state_sharding)
        teacher_sh = None
        if self.teacher_params is not None:
            teacher_sh = sharding_lib.logical_to_sharding(model_lib.logical_axes(self.teacher_model), self.mesh)
            self.teacher_params = jax.device_put(self.teacher_params, teacher_sh)
        self.p_step = jax.jit(
            self._step_fn, in_shardings=(self.state_sharding, None, self.rep, teacher_sh),
            out_shardings=(self.state_sharding, self.rep), donate_argnums=(0,),
        )
        self.p_eval = jax.jit(self._eval_fn, in_shardings=(self.param_sharding, None))
        return state

    # -- batches -----------------------------------------------------------------------
    def place(self, batch: dict[str, np.ndarray]) -> Any:
        if self.parallel == "pmap":
            return sharding_lib.split_for_pmap(batch, self.n_dev)
        return sharding_lib.shard_batch(batch, self.mesh)

    def host_state(self, state: TrainState) -> TrainState:
        return jax.tree.map(lambda x: x[0], state) if self.parallel == "pmap" else state

    def device_state(self, state: TrainState) -> TrainState:
        if self.parallel == "pmap":
            return replicate(state, self.n_dev)
        return state

    def step(self, state: TrainState, batch: dict[str, np.ndarray]) -> tuple[TrainState, dict[str, Any]]:
        state, metrics = self.p_step(state, self.place(batch), self.rng, self.teacher_params)
        if self.parallel == "pmap":
            metrics = jax.tree.map(lambda x: x[0], metrics)
        return state, metrics

    def evaluate(self, params: Any, batches: Any) -> dict[str, float]:
        from memgpt_jax.training.metrics import summarize_eval

        def results():
            for batch in batches:
                sums = self.p_eval(params, self.place(batch))
                if self.parallel == "pmap":  # psum'd sums are equal on every device
                    sums = {k: (v[0] if k != "predictions" else v) for k, v in sums.items()}
                yield sums, batch

        return summarize_eval(results(), self.task, self.model_config.num_labels)


def train(config: Any, workdir: str, *, data: inputs_lib.DataBundle | None = None, progress: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:
    """Trains to ``config.train.steps``; returns a summary. ``stop_after`` (tests)
    returns early after that many steps in this call."""
    os.makedirs(workdir, exist_ok=True)
    trainer = Trainer(config, workdir, progress=progress)
    tc = config.train
    data = data or inputs_lib.make_data(config, workdir)
    ckpt = Checkpointer(workdir, keep=int(tc.get("keep", 3)), save_every=int(tc.get("checkpoint_every", 1000)),
                        async_save=bool(tc.get("async_checkpoint", True)))
    if trainer.distill is not None and trainer.distill.topk:
        data.train = _with_teacher_cache(trainer, config, workdir, data.train)
    state = trainer.init_state()
    host_abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), state)
    restored = ckpt.restore_latest(host_abstract)
    start, wall_before = 0, 0.0
    if restored is not None:
        start, state, meta = restored
        wall_before = float(meta.get("wall_s") or 0.0)
        data.train.set_state(meta["data_state"])
        print(f"resumed from {ckpt.directory}/{start}", file=sys.stderr)
    summary_path = os.path.join(workdir, "summary.json")
    if start >= trainer.steps_total and os.path.isfile(summary_path):
        ckpt.close()
        print(f"{workdir} is already trained to step {start}; nothing to do", file=sys.stderr)
        with open(summary_path) as f:
            summary = json.load(f)
        summary["state"] = state
        return summary
    state = trainer.device_state(state)
    config_json = _to_dict(config)
    writer = MetricWriter(workdir)
    seq_len = int(config.data.seq_len)
    fpt = flops_per_token(trainer.model_config, seq_len)
    peak = measured_peak_flops("bfloat16" if trainer.model_config.compute_dtype == "bfloat16" else "float32")
    n_params = count_params(trainer.model_config, trainer.head)
    bar = None
    if trainer.progress:
        from tqdm import tqdm

        bar = tqdm(total=trainer.steps_total, initial=start, desc=f"train {config.task}", dynamic_ncols=True,
                   file=sys.stderr, mininterval=1.0)
    log_every = int(tc.get("log_every", 50))
    eval_every = int(tc.get("eval_every", 0))
    t_last, tokens_since, last_metrics, last_eval = time.perf_counter(), 0, {}, {}
    t_start = time.perf_counter()
    try:
        step = start
        while step < trainer.steps_total:
            batch = next(data.train)
            state, metrics = trainer.step(state, batch)
            step += 1
            save_now = ckpt.should_save(step) or step == trainer.steps_total
            log_now = step % log_every == 0 or step == trainer.steps_total
            # The loss reaches the host only when it is logged or a checkpoint is due (no
            # per-step sync); a non-finite loss is thus never saved.
            loss = float(metrics["loss"]) if save_now or log_now else 0.0
            if not np.isfinite(loss):
                good = ckpt.steps()[-1] if ckpt.steps() else None
                raise NonFiniteLossError(
                    f"loss became {loss} (seen at step {step}); stopping. The last good checkpoint is "
                    f"{'step ' + str(good) if good is not None else 'none (no checkpoint was saved yet)'} "
                    f"in {ckpt.directory}. Lower optim.lr or raise optim.warmup_steps, then rerun to resume."
                )
            tokens_since += int(np.prod(batch["inputs"].shape))
            if log_now:
                now = time.perf_counter()
                tps = tokens_since / max(now - t_last, 1e-9)
                t_last, tokens_since = now, 0
                last_metrics = {k: float(v) for k, v in metrics.items()}
                last_metrics.update(tokens_per_s=tps, mfu=fpt * tps / peak)
                writer.write(step, "train", last_metrics)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:,.0f}", mfu=f"{100 * fpt * tps / peak:.1f}%")
            if eval_every and (step % eval_every == 0 or step == trainer.steps_total) and data.eval is not None:
                last_eval = trainer.evaluate(state.params, data.eval())
                writer.write(step, "eval", last_eval)
                if bar is not None:
                    bar.write(f"step {step}: eval " + ", ".join(f"{k}={v:.4g}" for k, v in last_eval.items()))
            if bar is not None:
                bar.update(1)
            if save_now:
                ckpt.save(step, trainer.host_state(state), data_state=data.train.get_state(), config=config_json,
                          tokenizer=data.tokenizer_bytes, wall_s=wall_before + time.perf_counter() - t_start)
            if stop_after is not None and step - start >= stop_after:
                break
            if _KILL_AT is not None and step == int(_KILL_AT):  # fault injection for the resume test
                os.kill(os.getpid(), 9)
    finally:
        ckpt.close()
        writer.close()
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t_start
    summary = {
        "step": int(step), "params": n_params, "wall_s": wall_before + wall, "wall_s_this_run": wall,
        "train": last_metrics, "eval": last_eval,
        "flops_per_token": fpt, "peak_flops": peak, "peak_rss_mb": peak_rss_mb(),
    }
    if jax.process_index() == 0:
        with open(summary_path, "w") as f:
            json.dump(summary, f, indent=2)
    summary["state"] = trainer.host_state(state)
    return summary


def _with_teacher_cache(trainer: Trainer, config: Any, workdir: str, train_iter: Any) -> Any:
    """Builds (or reuses) the teacher top-k cache for every training batch, then
    frees the teacher: the student's step reads the cache instead."""
    from memgpt_jax.training import topk_cache
    from memgpt_jax.training.losses import topk_teacher
    from memgpt_jax.training.steps import model_inputs

    k = trainer.distill.topk
    teacher, t_params = trainer.teacher_model, trainer.teacher_params

    @jax.jit
    def top(params: Any, batch: dict[str, Any]) -> Any:
        out = teacher.apply({"params": params}, batch["inputs"], **model_inputs("lm", batch))
        return topk_teacher(out.logits, k)

    directory = os.path.join(workdir, "teacher_topk")
    fresh = inputs_lib.make_data(config, workdir)  # the same deterministic batches
    topk_cache.build_cache(directory, fresh.train, lambda b: top(t_params, b), trainer.steps_total, k,
                           progress=trainer.progress)
    trainer.teacher_params = None
    return topk_cache.CachedTeacherIterator(train_iter, directory)


def evaluate_checkpoint(workdir: str, batches: Any, config: Any) -> dict[str, float]:
    """Evaluates a run's latest parameters on ``batches``."""
    params, meta = load_params(workdir)
    trainer = Trainer(config, workdir, progress=False)
    if trainer.parallel == "pmap":
        params = replicate(params, trainer.n_dev)
    else:
        trainer.init_state()
    return trainer.evaluate(params, batches)
