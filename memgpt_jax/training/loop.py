"""The training loop: pretraining, fine-tuning and distillation share it.

``train(config, workdir)`` builds the model, the optimizer and the step of the
run's parallelism strategy (``training/parallel.py``), restores the newest good checkpoint in
``workdir`` if there is one (train state *and* data-iterator state, so a resumed
run sees exactly the batches an uninterrupted run would), and trains. It shows
a progress bar (loss, tokens/s, MFU, ETA), writes ``metrics.jsonl`` and
TensorBoard event files, evaluates every ``train.eval_every`` steps, and stops
with a clear message, keeping the last good checkpoint, if the loss turns NaN/Inf.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import signal
import sys
import threading
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tensorboardX import SummaryWriter
from tqdm import tqdm


from memgpt_jax import data as data_lib
from memgpt_jax import layers
from memgpt_jax import model as model_lib
from memgpt_jax import tasks
from memgpt_jax.compress import prune
from memgpt_jax.flops import count_params, flops_per_token, peak_flops
from memgpt_jax.progress import on_terminal
from memgpt_jax.run_config import RunConfig
from memgpt_jax.training import inputs as inputs_lib
from memgpt_jax.training import losses, runlock, topk_cache
from memgpt_jax.training.checkpoint import Checkpointer, abstract_like, load_params
from memgpt_jax.training.evaluate import evaluate
from memgpt_jax.training.optim import make_optimizer
from memgpt_jax.training.parallel import make_strategy
from memgpt_jax.training.run import Run, open_run
from memgpt_jax.training.state import TrainState
from memgpt_jax.training.steps import make_loss_fn, make_train_step, model_inputs
from memgpt_jax.training.teacher import TeacherEnsemble, init_student_from_teacher, open_teacher


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB (Linux ``VmHWM``; else ``getrusage``)."""
    try:
        with open("/proc/self/status") as f:
            return next(float(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; the message names the last good checkpoint."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM stopped the run after a step; a checkpoint of that step was saved.
    ``signum`` is the signal; the message says where the run is and how to resume."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class StopRequest:
    """SIGINT/SIGTERM handling for the duration of a run (main thread only): the first
    signal asks the loop to stop after the current step and save; a second one exits at
    once. The previous handlers are restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # the second signal: no checkpoint, exit now
            print(f"\n{signal.Signals(signum).name} again: exiting at once, without saving", file=sys.stderr)
            os._exit(128 + signum)
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
              "(send it again to exit at once)", file=sys.stderr)


class MetricWriter:
    """``metrics.jsonl`` plus TensorBoard event files (tensorboardX, no TensorFlow).

    A run resumed from step ``resume_step`` replaces what was logged after that step:
    later rows leave ``metrics.jsonl`` and TensorBoard purges its later events."""

    def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0) -> None:
        self.enabled = enabled and jax.process_index() == 0
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "metrics.jsonl")
        if os.path.isfile(path):
            _truncate_jsonl(path, resume_step)
        self.jsonl = open(path, "a")
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, prefix: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        try:
            self.jsonl.write(json.dumps({"step": step, "split": prefix, **metrics}) + "\n")
            self.jsonl.flush()
            for k, v in metrics.items():
                self.tb.add_scalar(f"{prefix}/{k}", v, step)
        except OSError as e:  # e.g. a full disk: the metrics stop, training goes on to its checkpoint
            print(f"warning: could not write the metrics of step {step} ({e.strerror or e}); "
                  f"no more metrics are logged in this run", file=sys.stderr)
            self.close()
            self.enabled = False

    def close(self) -> None:
        if self.enabled:
            for f in (self.jsonl, self.tb):
                try:
                    f.close()
                except OSError:
                    pass


def _init_params(config: RunConfig, model: nn.Module, rng: jax.Array, teacher: Run | None
                 ) -> tuple[Any, Any, dict | None]:
    """The student's starting parameters (random, ``train.init_from``, pruned, or the
    teacher's layers), the auxiliary trainable parameters of distillation, and where the
    parameters came from (``{"from": path, "step": its checkpoint}``; None: random)."""
    tc = config.train
    params, _ = model_lib.init(model, jax.random.fold_in(rng, 1))
    init = None
    if tc.init_from:  # e.g. a classifier from a pretrained language model's backbone
        pretrained, meta = load_params(tc.init_from, tc.init_step or None)
        init = {"from": tc.init_from, "step": meta.get("step")}
        source = f"{init['from']} (step {init['step']})"
        if jax.tree.map(np.shape, pretrained) == jax.tree.map(np.shape, params):
            params = jax.tree.map(np.asarray, pretrained)  # the whole model, head included
            print(f"initialised every parameter from {source}", file=sys.stderr)
        elif jax.tree.map(np.shape, pretrained["transformer"]) == jax.tree.map(np.shape, params["transformer"]):
            params = {**params, "transformer": pretrained["transformer"]}
            print(f"initialised the transformer from {source}", file=sys.stderr)
        else:
            raise ValueError(f"train.init_from={tc.init_from}: its transformer differs in shape from this model's")
    if tc.prune_kind != "none":
        params = prune.apply_masks(params, prune.magnitude_masks(params, tc.prune_sparsity, tc.prune_kind))
        print(f"pruned ({tc.prune_kind}): {prune.sparsity(params)}", file=sys.stderr)
    if teacher is not None and config.distill.init_from_teacher:
        params = init_student_from_teacher(params, teacher.params, config.model, teacher.model_config)
    aux = {}
    if teacher is not None and config.distill.hidden_weight > 0 and teacher.model_config.d_model != config.model.d_model:
        dummy = jnp.zeros((1, 1, config.model.d_model))
        proj = losses.HiddenProjection(teacher.model_config.d_model).init(jax.random.fold_in(rng, 2), dummy)
        aux = {"hidden_proj": layers.unbox(proj["params"])}
    return params, aux, init


# Model fields a resumed run may change: they do not change its parameters.
_RESUMABLE_MODEL_CHANGES = ("dropout", "compute_dtype", "attention.impl", "int8_activations")


class WorkdirInUseError(ValueError):
    """The work directory holds a different run (another task or architecture)."""


def _check_same_run(config: RunConfig, saved: dict[str, Any] | None, workdir: str) -> None:
    """Refuses to resume ``workdir`` with a config whose task or architecture differs from
    the run saved there: its checkpoints would not restore and would be overwritten."""
    if not saved:
        return
    try:
        old = RunConfig.from_saved(saved)
    except ValueError:
        return  # a config from another version: the restore decides
    new_flat, old_flat = _flatten({"task": config.task, "model": config.model.to_dict()}), \
        _flatten({"task": old.task, "model": old.model.to_dict()})
    changed = [k for k in sorted(new_flat) if new_flat[k] != old_flat.get(k)
               and k.removeprefix("model.") not in _RESUMABLE_MODEL_CHANGES]
    if changed:
        shown = ", ".join(f"{k}={old_flat.get(k)!r} (this config: {new_flat[k]!r})" for k in changed[:3])
        raise WorkdirInUseError(f"{workdir} holds a different run: {shown}{' ...' if len(changed) > 3 else ''}. "
                                f"Use a new --workdir (or train.init_from={workdir} to start from its weights).")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _cpu_total(before: float | None, start: float) -> float | None:
    """CPU seconds of the run so far (every thread of the training processes), or None
    when an earlier part of it went unrecorded."""
    return None if before is None else before + time.process_time() - start


def _check_teacher(config: RunConfig, teacher: Run) -> None:
    if teacher.task != config.task:
        raise ValueError(f"distill.teacher={teacher.path} was trained for task {teacher.task!r}, "
                         f"the student for {config.task!r}")
    d = config.distill
    if isinstance(teacher.model, TeacherEnsemble) and (d.hidden_weight or d.attention_weight or d.init_from_teacher):
        raise ValueError(f"distill.teacher={teacher.path} is an ensemble: it gives logits only; set "
                         "distill.hidden_weight=0, distill.attention_weight=0 and distill.init_from_teacher=False")
    t, s = teacher.model_config, config.model
    if tasks.get(config.task).token_level and t.vocab_size != s.vocab_size:
        raise ValueError(f"distill.teacher={teacher.path}: vocabulary {t.vocab_size} differs "
                         f"from the student's model.vocab_size={s.vocab_size}")
    if not tasks.get(config.task).token_level and t.num_labels != s.num_labels:
        raise ValueError(f"distill.teacher={teacher.path}: {t.num_labels} labels, "
                         f"the student has model.num_labels={s.num_labels}")


def train(config: RunConfig, workdir: str, *, teacher: Run | None = None, data: inputs_lib.DataBundle | None = None,
          progress: bool = True, stop_after: int | None = None, stop_at: int | None = None,
          on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Trains to ``config.train.steps``; returns a summary (and the final ``state``).

    ``teacher``: the distillation teacher, when the caller has opened it (a converted
    Hugging Face model, say); otherwise ``config.distill.teacher`` is opened as a run.
    ``stop_after`` returns early after that many steps in this call; ``stop_at`` returns at
    that step, with its checkpoint saved and the schedule still that of ``train.steps`` (a
    long run trained in slices); ``on_step(step)``
    is called after every step (and its checkpoint, when one is due).

    The run directory is held for the whole call (:mod:`~memgpt_jax.training.runlock`): a
    second writer is refused with :class:`~memgpt_jax.training.runlock.RunLockedError`."""
    with runlock.hold(workdir, enabled=jax.process_index() == 0):
        return _train(config, workdir, teacher=teacher, data=data, progress=progress, stop_after=stop_after,
                      stop_at=stop_at, on_step=on_step)


def _train(config: RunConfig, workdir: str, *, teacher: Run | None, data: inputs_lib.DataBundle | None,
           progress: bool, stop_after: int | None, stop_at: int | None,
           on_step: Callable[[int], None] | None) -> dict[str, Any]:
    os.makedirs(workdir, exist_ok=True)
    # The run records where its data is, so every later command finds it there.
    config = config.replace(data={"data_dir": data_lib.resolve_data_dir(config.data.data_dir)})
    tc, task, spec = config.train, config.task, tasks.check(config)
    progress = progress and jax.process_index() == 0
    model = spec.build(config.model)
    tx, schedule = make_optimizer(config.optim, tc.steps)
    if tc.prune_kind != "none":  # recovery fine-tuning: pruned weights stay exactly zero
        tx = optax.chain(tx, prune.freeze_zeros())
    rng = jax.random.key(tc.seed)
    ckpt = Checkpointer(workdir, keep=tc.keep, save_every=tc.checkpoint_every, async_save=tc.async_checkpoint,
                        keep_period=tc.keep_period)
    _check_same_run(config, ckpt.saved_config(), workdir)  # before any work
    if config.distill.enabled and teacher is None:
        teacher = open_teacher(config.distill.teacher, config.task)
    if teacher is not None:
        _check_teacher(config, teacher)
        print(f"teacher: {teacher.path} (step {teacher.step}, {teacher.task})", file=sys.stderr)
    distill = config.distill if teacher is not None else None

    data = data or inputs_lib.make_data(config)
    teacher_params = None if teacher is None else teacher.params
    if distill is not None and distill.topk:  # the step reads a cache of the teacher's top-k logits
        data.train = _with_teacher_cache(config, workdir, teacher, progress, data.train)
        step_teacher, teacher_params = None, None
    else:
        step_teacher = None if teacher is None else teacher.model
    loss_fn = make_loss_fn(task, model, distill, step_teacher, label_smoothing=tc.label_smoothing)

    strategy = make_strategy(tc.parallel, tc.mesh, model)
    params, aux, init = _init_params(config, model, rng, teacher)
    state = strategy.place_state(TrainState.create(params, tx, aux))
    restored = ckpt.restore_latest(abstract_like(state))
    start, wall_before, cpu_before = 0, 0.0, 0.0
    if restored is not None:
        start, state, meta = restored
        wall_before = float(meta.get("wall_s") or 0.0)
        # a run resumed from a checkpoint that did not record it: its CPU time is unknown, not partial
        cpu_before = float(meta["cpu_s"]) if meta.get("cpu_s") is not None else None
        data.train.set_state(meta["data_state"])
        print(f"resumed from {ckpt.directory}/{start}", file=sys.stderr)
    elif os.path.isdir(os.path.join(workdir, "unusable_checkpoints")):
        print("no usable checkpoint: training from step 0", file=sys.stderr)
    summary_path = os.path.join(workdir, "summary.json")
    if stop_at is not None and start >= stop_at and start < tc.steps:
        ckpt.close()
        print(f"{workdir} is at step {start}, at or past the stop at {stop_at}; nothing to do", file=sys.stderr)
        return {"step": start, "params": count_params(config.model, spec.head), "wall_s": wall_before,
                "wall_s_this_run": 0.0, "train": {}, "eval": {}, "state": state}
    if start >= tc.steps:
        ckpt.close()
        print(f"{workdir} is already trained to step {start} (train.steps={tc.steps}); nothing to do",
              file=sys.stderr)
        summary = {"step": start, "params": count_params(config.model, spec.head), "wall_s": wall_before,
                   "wall_s_this_run": 0.0, "train": {}, "eval": {}}
        if os.path.isfile(summary_path):  # the figures of the run that finished it
            with open(summary_path) as f:
                summary = json.load(f)
        summary["state"] = state
        return summary
    make_step = functools.partial(make_train_step, loss_fn, tx, schedule, accum_steps=tc.accum_steps)
    state, teacher_params = strategy.compile(
        state, lambda axis_name: make_step(axis_name=axis_name),
        None if teacher_params is None else (teacher.model, teacher_params))

    _say(f"compiling the train step ({tc.parallel}, {task}, {config.model.n_layers} layers, "
         f"batch {config.data.batch_size} x {config.data.seq_len})...")
    config_json = config.to_dict()
    writer = MetricWriter(workdir, resume_step=start)
    fpt = flops_per_token(config.model, config.data.seq_len)
    peak_dtype = "bfloat16" if config.model.compute_dtype == "bfloat16" else "float32"
    peak, peak_source = peak_flops(peak_dtype)  # a spec-sheet figure, or the best measured on this CPU
    _say(f"MFU is against a peak of {peak / 1e9:,.0f} GFLOP/s ({peak_source})")
    n_params = count_params(config.model, spec.head)
    verb = "distill" if teacher is not None else "train"
    # a bar on a terminal; in a log file (or with --no-progress) the log lines below
    bar = tqdm(total=tc.steps, initial=start, desc=f"{verb} {task}", dynamic_ncols=True, file=sys.stderr,
               mininterval=1.0) if progress and on_terminal() else None
    t_last, tokens_since, last_metrics, last_eval = time.perf_counter(), 0, {}, {}
    t_start, cpu_start = time.perf_counter(), time.process_time()
    step, pending = start, None  # pending: the previous step's loss (at most one step runs ahead)
    with StopRequest() as stop:
        try:
            while step < tc.steps:
                batch = next(data.train)
                state, metrics = strategy.step(state, strategy.place_batch(batch), rng, teacher_params)
                if step == start:  # the first call compiled the step
                    _say(f"compiled in {time.perf_counter() - t_start:.1f} s; training", bar)
                if pending is not None:  # keeps the bar true to the device and Ctrl-C answered within a step
                    jax.block_until_ready(pending)
                pending = metrics["loss"]
                step += 1
                save_now = ckpt.should_save(step) or step in (tc.steps, stop_at)
                log_now = step % tc.log_every == 0 or step == tc.steps
                # The loss is checked when it is logged or a checkpoint is due; a non-finite
                # loss is thus never saved.
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
                    tps = tokens_since / max(time.perf_counter() - t_last, 1e-9)
                    t_last, tokens_since = time.perf_counter(), 0
                    last_metrics = {k: float(v) for k, v in metrics.items()}
                    last_metrics.update(tokens_per_s=tps, mfu=fpt * tps / peak, peak_flops=peak)
                    writer.write(step, "train", last_metrics)
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:,.0f}", mfu=f"{100 * fpt * tps / peak:.1f}%")
                    else:  # no terminal, or --no-progress: the same figures as log lines
                        _say(f"step {step}/{tc.steps}: loss {loss:.4f}, {tps:,.0f} tokens/s, MFU {100 * fpt * tps / peak:.1f}%")
                if tc.eval_every and (step % tc.eval_every == 0 or step == tc.steps) and data.eval is not None:
                    _say(f"step {step}: evaluating on {config.data.eval_split}...", bar)
                    last_eval = evaluate(task, model, strategy.saveable(state).params, data.eval())
                    writer.write(step, "eval", last_eval)
                    _say(f"step {step}: eval " + ", ".join(f"{k}={v:.4g}" for k, v in last_eval.items()), bar)
                if bar is not None:
                    bar.update(1)
                interrupted = stop.signum is not None and step < tc.steps
                if save_now or interrupted:
                    if step == tc.steps or interrupted:
                        _say(f"saving the checkpoint of step {step} in {ckpt.directory}...", bar)
                    ckpt.save(step, strategy.saveable(state), data_state=data.train.get_state(), config=config_json,
                              tokenizer=data.tokenizer_bytes, wall_s=wall_before + time.perf_counter() - t_start,
                              cpu_s=_cpu_total(cpu_before, cpu_start))
                if on_step is not None:
                    on_step(step)
                if interrupted:
                    name = signal.Signals(stop.signum).name
                    raise TrainingInterrupted(
                        f"{name}: stopped at step {step} of {tc.steps}; the checkpoint of step {step} is in "
                        f"{ckpt.directory}. Rerun the same command to resume.", stop.signum)
                if (stop_after is not None and step - start >= stop_after) or step == stop_at:
                    break
        finally:
            ckpt.close()  # waits for an asynchronous save to finish
            writer.close()
            if bar is not None:
                bar.close()
    wall = time.perf_counter() - t_start
    summary = {
        "step": int(step), "params": n_params, "wall_s": wall_before + wall, "wall_s_this_run": wall,
        "cpu_s": _cpu_total(cpu_before, cpu_start),
        "train": last_metrics, "eval": last_eval,
        "flops_per_token": fpt, "peak_flops": peak, "peak_source": peak_source,
        "peak_rss_mb": peak_rss_mb(), "init": init,
    }
    if jax.process_index() == 0:
        with open(summary_path, "w") as f:
            json.dump(summary, f, indent=2)
    summary["state"] = strategy.saveable(state)
    return summary


def _truncate_jsonl(path: str, last_step: int) -> None:
    """Keeps the rows of steps up to ``last_step`` (and drops a torn last line)."""
    kept = []
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= last_step:
                kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def _say(message: str, bar: Any = None) -> None:
    """A status line on stderr (above the progress bar when there is one)."""
    if jax.process_index() == 0:
        (bar.write if bar is not None else print)(message, file=sys.stderr)


def _with_teacher_cache(config: RunConfig, workdir: str, teacher: Run, progress: bool, train_iter: Any) -> Any:
    """Builds (or reuses) the teacher top-k cache for every training batch; the
    student's step then reads the cache instead of running the teacher."""
    k = config.distill.topk

    @jax.jit
    def top(params: Any, batch: dict[str, Any]) -> Any:
        out = teacher.model.apply({"params": params}, batch["inputs"], **model_inputs(config.task, batch))
        return losses.topk_teacher(out.logits, k)

    directory = os.path.join(workdir, "teacher_topk")
    fresh = inputs_lib.make_data(config)  # the same deterministic batches
    topk_cache.build_cache(directory, fresh.train, lambda b: top(teacher.params, b), config.train.steps, k,
                           progress=progress)
    return topk_cache.CachedTeacherIterator(train_iter, directory)
