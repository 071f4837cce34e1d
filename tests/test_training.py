"""Training (issue 5): real steps through every entry point, parallel equivalence,
kill-and-resume, NaN handling, corrupt checkpoints, multi-process."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from memgpt_jax import data as data_lib
from memgpt_jax.cli import main as cli_main
from memgpt_jax.training import inputs as inputs_lib
from memgpt_jax import run_config
from memgpt_jax.training.checkpoint import Checkpointer, abstract_like, load_params
from memgpt_jax.training.loop import NonFiniteLossError, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "listops_tiny.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    old = os.environ.get("MEMGPT_DATA_DIR")
    os.environ["MEMGPT_DATA_DIR"] = d
    data_lib.prepare(data_lib.listops_builder("tiny", data_dir=d), echo=lambda _: None)
    yield d
    if old is None:
        os.environ.pop("MEMGPT_DATA_DIR", None)
    else:
        os.environ["MEMGPT_DATA_DIR"] = old


def _cfg(*overrides):
    return run_config.load(TINY, list(overrides))


@pytest.fixture(scope="module")
def fixed_batches(data_dir):
    data = inputs_lib.make_data(_cfg("--config.data.batch_size=16"))
    return [next(data.train) for _ in range(3)]


class _FixedBatches:
    """A resumable iterator over given batches (the loop asks for its state at saves)."""

    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def __next__(self):
        self.i += 1
        return self.batches[self.i - 1]

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = state["i"]


def _losses(tmp_path, batches, *overrides):
    """Per-step losses and final parameters of the real loop on fixed batches."""
    config = _cfg("--config.data.batch_size=16", f"--config.train.steps={len(batches)}", "--config.train.log_every=1",
                  "--config.train.checkpoint_every=1000",
                  "--config.train.eval_every=0", *overrides)
    data = inputs_lib.DataBundle(train=_FixedBatches(batches), eval=None, tokenizer=None, tokenizer_bytes=None)
    summary = train(config, str(tmp_path), data=data, progress=False)
    losses = [json.loads(line)["loss"] for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
    return np.array(losses), jax.tree.map(np.asarray, summary["state"].params)


@pytest.mark.slow
def test_single_device_pmap_pjit_and_accumulation_agree(tmp_path, fixed_batches, n_devices):
    assert n_devices == 8
    single, p_single = _losses(tmp_path / "a", fixed_batches, "--config.train.mesh=(1,1,1)")
    pjit, p_pjit = _losses(tmp_path / "b", fixed_batches, "--config.train.mesh=(2,2,2)")
    pmap, _ = _losses(tmp_path / "c", fixed_batches, "--config.train.parallel=pmap")
    accum, _ = _losses(tmp_path / "d", fixed_batches, "--config.train.mesh=(1,1,1)", "--config.train.accum_steps=4")
    assert single[0] != single[-1]  # it trains
    np.testing.assert_allclose(pjit, single, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pmap, single, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(accum, single, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p_pjit, p_single)


@pytest.mark.slow
def test_entry_points_run_a_real_step(tmp_path, data_dir):
    teacher = str(tmp_path / "teacher")
    rc = cli_main(["finetune", "--config", TINY, "--workdir", teacher, "--no-progress",
                   "--config.train.steps=2", "--config.train.eval_every=2"])
    assert rc == 0
    summary = json.load(open(os.path.join(teacher, "summary.json")))
    assert summary["step"] == 2 and 0.0 <= summary["eval"]["accuracy"] <= 1.0
    assert os.path.isfile(os.path.join(teacher, "metrics.jsonl"))
    assert any(f.startswith("events") for f in os.listdir(os.path.join(teacher, "tensorboard")))

    student = str(tmp_path / "student")
    rc = cli_main(["distill", "--config", TINY, "--workdir", student, "--no-progress",
                   "--config.train.steps=2", f"--config.distill.teacher={teacher}",
                   "--config.model.n_layers=1", "--config.distill.hidden_weight=0.5",
                   "--config.distill.attention_weight=0.1"])
    assert rc == 0
    params, meta = load_params(student)
    assert set(params) == {"transformer", "score"}  # the teacher is not in the student's checkpoint
    assert "h_1" not in params["transformer"] and meta["config"]["distill"]["teacher"] == teacher

    # Pretraining on a text corpus the test writes.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"paragraph {i}: the quick brown fox jumps over the lazy dog." for i in range(40)))
    data_lib.prepare(data_lib.text_builder("unit_corpus", [str(corpus)], data_dir=data_dir), echo=lambda _: None)
    lm = str(tmp_path / "lm")
    rc = cli_main(["pretrain", "--config", TINY, "--workdir", lm, "--no-progress", "--config.task=lm",
                   "--config.data.dataset=text", "--config.data.name=memgpt_text/unit_corpus",
                   "--config.data.tokenizer=bytes", "--config.model.vocab_size=264",
                   "--config.train.steps=2", "--config.train.eval_every=2"])
    assert rc == 0
    assert json.load(open(os.path.join(lm, "summary.json")))["eval"]["tokens"] > 0

    # LM distillation from cached teacher top-k logits (the teacher runs once, before training).
    lm_student = str(tmp_path / "lm_student")
    rc = cli_main(["distill", "--config", TINY, "--workdir", lm_student, "--no-progress", "--config.task=lm",
                   "--config.data.dataset=text", "--config.data.name=memgpt_text/unit_corpus",
                   "--config.data.tokenizer=bytes", "--config.model.vocab_size=264", "--config.model.d_model=16",
                   "--config.train.steps=3", f"--config.distill.teacher={lm}", "--config.distill.topk=5"])
    assert rc == 0
    cached = sorted(os.listdir(os.path.join(lm_student, "teacher_topk")))
    assert cached == ["manifest.json", "step_00000000.npz", "step_00000001.npz", "step_00000002.npz"]
    assert np.load(os.path.join(lm_student, "teacher_topk", cached[1]))["values"].shape[-1] == 5
    rows = [json.loads(line) for line in open(os.path.join(lm_student, "metrics.jsonl"))]
    kd = [r.get("kd") for r in rows if r["split"] == "train"]
    assert kd and all(v is not None and v > 0 for v in kd)

    # Fine-tuning from the pretrained backbone.
    rc = cli_main(["finetune", "--config", TINY, "--workdir", str(tmp_path / "ft"), "--no-progress",
                   "--config.train.steps=1", "--config.model.vocab_size=264", f"--config.train.init_from={lm}"])
    assert rc == 0
    with open(tmp_path / "ft" / "summary.json") as f:  # where its parameters came from, for the tables
        assert json.load(f)["init"] == {"from": lm, "step": 2}


def test_bad_command_lines_fail_clearly(tmp_path, capsys, data_dir):
    assert cli_main(["pretrain", "--config", TINY, "--workdir", str(tmp_path)]) == 2  # task mismatch
    assert "task" in capsys.readouterr().err
    assert cli_main(["finetune", "--config", TINY, "--workdir", str(tmp_path), "--config.train.nope=1"]) == 2
    assert "unknown field" in capsys.readouterr().err
    assert cli_main(["distill", "--config", TINY, "--workdir", str(tmp_path)]) == 2
    assert "teacher" in capsys.readouterr().err


_CLI_ARGS = ["finetune", "--config", TINY, "--no-progress", "--config.train.checkpoint_every=3",
             "--config.train.mesh=(1,1,1)", "--config.train.eval_every=0"]

# Runs the training command in a subprocess whose loop calls back after every step (a
# callback of the loop; nothing in the library reads a fault-injection switch): `kill N`
# SIGKILLs the process right after step N, `slow S` sleeps S seconds per step, `hold N`
# waits after step N until the file $HOLD_UNTIL exists (at most 120 s).
_WRAPPED_RUN = """
import os, sys, time
from memgpt_jax.training import loop
mode, value, real_train = sys.argv[1], float(sys.argv[2]), loop.train
def on_step(step):
    if mode == "kill" and step == value:
        os.kill(os.getpid(), 9)
    if mode == "slow":
        time.sleep(value)
    if mode == "hold" and step == value:
        deadline = time.time() + 120
        while not os.path.exists(os.environ["HOLD_UNTIL"]) and time.time() < deadline:
            time.sleep(0.05)
def wrapped_train(*args, **kwargs):
    return real_train(*args, on_step=on_step, **kwargs)
loop.train = wrapped_train  # before the command module imports it
from memgpt_jax.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _cli_command(workdir, steps=16, wrap=None):
    args = [*_CLI_ARGS, "--workdir", str(workdir), f"--config.train.steps={steps}"]
    if wrap is None:
        return [sys.executable, "-m", "memgpt_jax.cli", *args]
    return [sys.executable, "-c", _WRAPPED_RUN, *map(str, wrap), *args]


def _run_cli(workdir, steps=16, wrap=None):
    return subprocess.run(_cli_command(workdir, steps, wrap), capture_output=True, text=True, timeout=300)


def _same_params(a_dir, b_dir):
    a, _ = load_params(str(a_dir))
    b, _ = load_params(str(b_dir))
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.mark.slow
def test_sigkill_and_sigint_then_resume_are_bitwise_identical(tmp_path, data_dir, capsys):
    full = _run_cli(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-2000:]

    killed = _run_cli(tmp_path / "killed", wrap=("kill", 11))
    assert killed.returncode == -9, killed.stderr[-2000:]
    # Saves are asynchronous: the newest complete one is 6 or 9; the one after 11 never happened.
    assert Checkpointer(str(tmp_path / "killed")).steps()[-1] in (6, 9)
    resumed = _run_cli(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    assert "which is no longer running; taking over its lock" in resumed.stderr  # the killed run's lock
    _same_params(tmp_path / "full", tmp_path / "killed")
    # The steps logged after the restored checkpoint were replaced, not repeated.
    rows = [json.loads(line) for line in open(tmp_path / "killed" / "metrics.jsonl")]
    full_rows = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
    assert [(r["split"], r["step"]) for r in rows] == [(r["split"], r["step"]) for r in full_rows]

    # Ctrl-C while training: the step finishes, a checkpoint of it is saved, the command
    # says how to resume and exits promptly with 128 + SIGINT.
    proc = subprocess.Popen(_cli_command(tmp_path / "stopped", wrap=("slow", 0.3)), stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "compiled in" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    t0 = time.perf_counter()
    rest = proc.communicate(timeout=60)[1]
    elapsed = time.perf_counter() - t0
    stderr = "".join(lines) + rest
    assert proc.returncode == 130, stderr[-2000:]
    assert elapsed < 15, elapsed
    assert "SIGINT: stopped at step" in stderr and "Rerun the same command to resume" in stderr
    assert "Traceback" not in stderr
    stopped_at = Checkpointer(str(tmp_path / "stopped")).steps()[-1]
    assert 0 < stopped_at < 16 and f"stopped at step {stopped_at} " in stderr
    resumed = _run_cli(tmp_path / "stopped")
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr[-2000:]
    _same_params(tmp_path / "full", tmp_path / "stopped")

    # In slices (--stop-at): a checkpoint at the stop, the schedule of train.steps kept.
    def sliced(*extra):
        return subprocess.run([*_cli_command(tmp_path / "sliced"), *extra], capture_output=True, text=True,
                              timeout=300)

    in_process = [*_CLI_ARGS, "--workdir", str(tmp_path / "sliced"), "--config.train.steps=16"]
    assert cli_main([*in_process, "--stop-at", "17"]) == 2
    assert "--stop-at 17: must be in 1..train.steps (16)" in capsys.readouterr().err
    first = sliced("--stop-at", "5")
    assert first.returncode == 0, first.stderr[-2000:]
    assert Checkpointer(str(tmp_path / "sliced")).steps()[-1] == 5  # checkpoint_every=3: 3, and the stop
    assert cli_main([*in_process, "--stop-at", "5"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    rest = sliced()
    assert rest.returncode == 0 and "resumed from" in rest.stderr, rest.stderr[-2000:]
    _same_params(tmp_path / "full", tmp_path / "sliced")


@pytest.mark.slow
def test_one_writer_per_run_directory(tmp_path, data_dir):
    """A second training command on a live run's directory is refused at once, in one line
    naming the holder; `eval` reads the live run's newest complete checkpoint; the first run
    finishes and its checkpoints restore. (The leftover lock of a killed run is taken over:
    test_sigkill_and_sigint_then_resume_are_bitwise_identical.)"""
    workdir, release = tmp_path / "live", tmp_path / "release"
    # the first run waits after step 4 (a checkpoint at 3 is complete or being written) until released
    first = subprocess.Popen(_cli_command(workdir, wrap=("hold", 4)), stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "HOLD_UNTIL": str(release)})
    try:
        for line in first.stderr:
            if "compiled in" in line:
                break
        deadline = time.time() + 60  # (a Checkpointer here would be a second writer: it cleans up partial saves)
        while time.time() < deadline and not any(d.isdigit() for d in os.listdir(workdir / "checkpoints")):
            time.sleep(0.2)
        second = _run_cli(workdir)
        assert first.poll() is None, "the first run ended before the second started"
        assert second.returncode == 2, second.stderr[-2000:]
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith(f"error: {workdir} is being written by `memgpt-jax ") and " finetune " in line and \
            f"(pid {first.pid} on " in line and "one run directory takes one writer" in line, line
        evaluated = subprocess.run([sys.executable, "-m", "memgpt_jax.cli", "eval", "--checkpoint", str(workdir)],
                                   capture_output=True, text=True, timeout=300)
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        release.touch()
        rest = first.communicate(timeout=300)[1]
    finally:
        first.kill()
    assert first.returncode == 0, rest[-2000:]
    assert not os.path.exists(workdir / "run.lock")
    params, meta = load_params(str(workdir))
    assert meta["step"] == 16 and params


@pytest.mark.slow
def test_corrupt_checkpoint_is_skipped(tmp_path, data_dir):
    workdir = tmp_path / "run"
    summary = train(_cfg("--config.train.steps=4", "--config.train.mesh=(1,1,1)"), str(workdir), progress=False)
    ckpt_dir = workdir / "checkpoints" / "4" / "state"
    for root, _, files in os.walk(ckpt_dir):
        for f in files:
            if not f.endswith(".json"):
                open(os.path.join(root, f), "wb").close()  # truncate the array data
    abstract = abstract_like(summary["state"])
    ckpt = Checkpointer(str(workdir))
    step, restored, meta = ckpt.restore_latest(abstract)
    ckpt.close()
    assert step == 2 and int(restored.step) == 2 and meta["data_state"] is not None


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir):
    with pytest.raises(NonFiniteLossError, match="last good checkpoint is step 2"):
        train(_cfg("--config.train.steps=8", "--config.optim.lr=1e30", "--config.optim.warmup_steps=0",
                   "--config.optim.grad_clip=0.0", "--config.train.mesh=(1,1,1)"),
              str(tmp_path / "nan"), progress=False)
    steps = Checkpointer(str(tmp_path / "nan")).steps()
    assert steps and steps[-1] == 2


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, data_dir):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    worker = os.path.join(ROOT, "tests", "multihost_worker.py")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    one = subprocess.run([sys.executable, worker, "0", "1", port, str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    procs = [subprocess.Popen([sys.executable, worker, str(i), "2", port, str(tmp_path / "two")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    a = json.loads(one.stdout.strip().splitlines()[-1])
    b = json.loads(outs[0][0].strip().splitlines()[-1])
    assert (a["processes"], b["processes"], a["devices"], b["devices"]) == (1, 2, 8, 8)
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=1e-5, atol=1e-5)
