"""Issue 19's distillation levers: an ensemble of teachers (probabilities averaged) and
unlabelled reviews (label -1) that train a student through the teacher only."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memgpt_jax import data as data_lib
from memgpt_jax import model as model_lib
from memgpt_jax import run_config, tasks
from memgpt_jax.data.testing import write_aclimdb
from memgpt_jax.run_config import ConfigError
from memgpt_jax.training import steps
from memgpt_jax.training.loop import train
from memgpt_jax.training.run import open_run
from memgpt_jax.training.teacher import TeacherEnsemble, open_teacher

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "imdb.py")


def tiny(data_dir: str, *overrides: str):
    return run_config.load(f"{CONFIG}:tiny", [f"--config.data.data_dir={data_dir}", *overrides])


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Two tiny IMDb teachers (seeds 0 and 1) on a tiny official-layout archive."""
    root = tmp_path_factory.mktemp("ens")
    data_dir = str(root / "tfds")
    data_lib.prepare(data_lib.imdb_builder(source=write_aclimdb(str(root / "imdb.tar.gz")), data_dir=data_dir),
                     echo=lambda _: None)
    paths = []
    for seed in (0, 1):
        path = str(root / f"teacher{seed}")
        train(tiny(data_dir, f"--config.train.seed={seed}"), path, progress=False)
        paths.append(path)
    return data_dir, paths


@pytest.mark.slow
def test_ensemble_logits_are_the_log_of_the_mean_probability(teachers):
    _, paths = teachers
    ens = open_teacher(",".join(paths))
    assert isinstance(ens.model, TeacherEnsemble) and set(ens.params) == {"members_0", "members_1"}
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 200, (3, 16)), jnp.int32)
    valid = jnp.ones((3, 16), bool)
    got = ens.model.apply({"params": ens.params}, ids, kv_valid=valid).logits
    members = [open_run(p) for p in paths]
    probs = [jax.nn.softmax(r.model.apply({"params": r.params}, ids, kv_valid=valid).logits.astype(jnp.float32),
                            axis=-1) for r in members]
    np.testing.assert_allclose(np.exp(got), (probs[0] + probs[1]) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(probs[0], probs[1])  # two different members, or the test proves nothing
    # the sharding rules read the ensemble's parameter tree from shapes alone
    axes = model_lib.logical_axes(ens.model)
    assert set(axes) == {"members_0", "members_1"}
    with pytest.raises(ValueError, match="logits only"):
        ens.model.apply({"params": ens.params}, ids, kv_valid=valid, output_hidden_states=True)


@pytest.mark.slow
def test_student_distils_from_an_ensemble_on_labelled_and_unlabelled_reviews(teachers, tmp_path):
    data_dir, paths = teachers
    config = tiny(data_dir, f"--config.distill.teacher={','.join(paths)}",
                  "--config.data.train_split=train+unsupervised")
    summary = train(config, str(tmp_path / "student"), progress=False)
    assert summary["step"] == config.train.steps
    assert np.isfinite(summary["train"]["kd"]) and np.isfinite(summary["train"]["hard"])
    with pytest.raises(ConfigError, match="unlabelled reviews"):  # no teacher: the unsup rows teach nothing
        tasks.check(tiny(data_dir, "--config.data.train_split=train+unsupervised"))
    with pytest.raises(ValueError, match="is an ensemble"):
        train(config.replace(distill={"hidden_weight": 1.0}), str(tmp_path / "s2"), progress=False)


def test_unlabelled_rows_leave_the_hard_loss_unchanged():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(4, 2)), jnp.float32)
    out = model_lib.ModelOutput(logits=logits)
    labelled = {"label": jnp.array([0, 1, -1, -1]), "example_valid": jnp.array([True, True, True, False])}
    only = {"label": jnp.array([0, 1]), "example_valid": jnp.array([True, True])}
    hard, metrics, weight = steps.task_loss("classification", out, labelled)
    ref, ref_metrics, _ = steps.task_loss("classification", model_lib.ModelOutput(logits=logits[:2]), only)
    np.testing.assert_allclose(hard, ref, rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], ref_metrics["accuracy"])
    assert float(weight) == 3.0  # the distillation term averages over every real row


@pytest.mark.slow
def test_distill_command_takes_an_ensemble_teacher(teachers, tmp_path, capsys):
    """`--config.distill.teacher=A,B` on the command line opens both runs as one teacher
    (the library's open_teacher: the CLI has no copy of its own); a bad member is one line."""
    from memgpt_jax.cli import main as cli_main

    data_dir, paths = teachers
    argv = ["distill", "--config", f"{CONFIG}:tiny", "--no-progress", f"--config.data.data_dir={data_dir}"]
    assert cli_main(argv + ["--workdir", str(tmp_path / "student"), f"--config.distill.teacher={','.join(paths)}"]) == 0
    err = capsys.readouterr().err
    assert f"teacher: {','.join(os.path.abspath(p) for p in paths)}" in err or f"teacher: {','.join(paths)}" in err
    assert open_run(str(tmp_path / "student")).step == 4
    # a run-directory teacher opens without the torch extra (only hf:DIR needs it)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from memgpt_jax import run_config\nfrom memgpt_jax.cli.train import teacher_or_exit\n"
            f"config = run_config.load({CONFIG + ':tiny'!r}, ['--config.distill.teacher={paths[0]}'])\n"
            "print(teacher_or_exit(config).step)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.split()[-1] == "4", done.stderr[-2000:]
    missing = str(tmp_path / "nowhere")
    with pytest.raises(SystemExit) as exc:
        cli_main(argv + ["--workdir", str(tmp_path / "s2"), f"--config.distill.teacher={paths[0]},{missing}"])
    assert exc.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: distill.teacher=") and "nowhere does not exist" in line


def test_label_smoothing_reaches_the_classification_loss():
    logits = jnp.asarray([[2.0, -1.0], [0.5, 0.25]], jnp.float32)
    batch = {"label": jnp.array([0, 1])}
    out = model_lib.ModelOutput(logits=logits)
    plain, _, _ = steps.task_loss("classification", out, batch)
    smooth, _, _ = steps.task_loss("classification", out, batch, label_smoothing=0.2)
    logp = np.asarray(jax.nn.log_softmax(logits))
    expected = np.mean([-(0.9 * logp[0, 0] + 0.1 * logp[0, 1]), -(0.1 * logp[1, 0] + 0.9 * logp[1, 1])])
    np.testing.assert_allclose(smooth, expected, rtol=1e-6)
    assert not np.isclose(plain, smooth)
    with pytest.raises(ConfigError, match="train.label_smoothing"):
        run_config.RunConfig().replace(train={"label_smoothing": 1.0})


@pytest.mark.slow
def test_average_writes_the_mean_of_the_last_checkpoints(teachers, tmp_path, capsys):
    from memgpt_jax import cli
    from memgpt_jax.training.checkpoint import load_params

    _, paths = teachers  # trained 4 steps, a checkpoint every 2: steps 2 and 4 are kept
    out = str(tmp_path / "avg")
    assert cli.main(["average", "--checkpoint", paths[0], "--last", "2", "--out", out]) == 0
    mean, meta = load_params(out)
    a, b = load_params(paths[0], 2)[0], load_params(paths[0], 4)[0]
    for m, x, y in zip(jax.tree.leaves(mean), jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(m, (np.asarray(x, np.float64) + y) / 2, rtol=1e-6, atol=1e-7)
    assert meta["averaged_steps"] == [2, 4] and "mean of 2" in capsys.readouterr().out
    trained = load_params(paths[0], 4)[1]  # checkpoints record the training's CPU time beside its wall time
    assert 0 < trained["cpu_s"] and 0 < trained["wall_s"]
    assert cli.main(["average", "--checkpoint", paths[0], "--steps", "2", "6", "--out", str(tmp_path / "x")]) == 2
    assert "averaging needs at least two" in capsys.readouterr().err


@pytest.mark.slow
def test_teacher_offsets_shift_the_teachers_logits_per_example(teachers, tmp_path):
    """distill.teacher_offsets: the step distils from ``scale * teacher logits + offset`` (a
    teacher stacked with another model), each training record with its own row; a file that
    does not line up with the training split is a clear error."""
    from memgpt_jax.run_config import DistillConfig
    from memgpt_jax.training import losses

    data_dir, paths = teachers
    run = open_run(paths[0])
    rng = np.random.default_rng(2)
    ids = jnp.asarray(rng.integers(3, 200, (3, 16)), jnp.int32)
    offset = jnp.asarray([[0.0, 4.0], [0.0, -4.0], [0.0, 0.5]], jnp.float32)
    batch = {"inputs": ids, "kv_valid": jnp.ones((3, 16), bool), "label": jnp.array([1, 0, -1]),
             "example_valid": jnp.ones((3,), bool), "teacher_offset": offset,
             "teacher_scale": jnp.full((3,), 0.5, jnp.float32)}
    distill = DistillConfig(teacher=paths[0], temperature=1.0, alpha=1.0)
    loss_fn = steps.make_loss_fn("classification", run.model, distill, run.model)
    trainable = {"params": open_run(paths[1]).params}
    kd = loss_fn(trainable, batch, jax.random.PRNGKey(0), run.params)[1][0]["kd"]
    student = run.model.apply({"params": trainable["params"]}, ids, kv_valid=batch["kv_valid"], deterministic=False,
                              rngs={"dropout": jax.random.PRNGKey(0)}).logits  # as the step runs it
    teacher = run.model.apply({"params": run.params}, ids, kv_valid=batch["kv_valid"]).logits
    ref = losses.distillation_loss(student, 0.5 * teacher.astype(jnp.float32) + offset, jnp.float32(0.0),
                                   batch["example_valid"], temperature=1.0, alpha=1.0)[1]["kd"]
    plain = losses.distillation_loss(student, teacher, jnp.float32(0.0), batch["example_valid"], temperature=1.0,
                                     alpha=1.0)[1]["kd"]
    np.testing.assert_allclose(kd, ref, rtol=1e-5)
    assert abs(float(kd) - float(plain)) > 1e-3  # the offsets moved the target

    # end to end: one row per record of the training split, in its order
    config = tiny(data_dir, f"--config.distill.teacher={paths[0]}", "--config.data.train_split=train+unsupervised",
                  f"--config.distill.teacher_offsets={tmp_path / 'offsets.npz'}")
    records = len(data_lib.load_split(config.data.name, "train+unsupervised", data_dir))
    np.savez(tmp_path / "offsets.npz", offsets=np.zeros((records + 1, 2), np.float32), teacher_scale=1.0)
    with pytest.raises(data_lib.DataError, match=r"needs \(%d, 2\)" % records):
        train(config, str(tmp_path / "bad"), progress=False)
    np.savez(tmp_path / "offsets.npz", offsets=np.zeros((records, 2), np.float32), teacher_scale=1.0, split="train")
    with pytest.raises(data_lib.DataError, match="written for split 'train'"):
        train(config, str(tmp_path / "bad2"), progress=False)
    offsets = np.stack([np.zeros(records), rng.normal(size=records)], 1).astype(np.float32)
    np.savez(tmp_path / "offsets.npz", offsets=offsets, teacher_scale=0.7, split="train+unsupervised")
    summary = train(config, str(tmp_path / "student"), progress=False)
    assert summary["step"] == config.train.steps and np.isfinite(summary["train"]["kd"])
    with pytest.raises(ConfigError, match="teacher_offsets"):  # offsets without a teacher
        tasks.check(tiny(data_dir, f"--config.distill.teacher_offsets={tmp_path / 'offsets.npz'}"))


def test_classification_batches_carry_each_records_offsets():
    source = [{"text": "a" * (i + 1), "label": i % 2} for i in range(12)]
    offsets = np.stack([np.zeros(12), np.arange(12)], 1).astype(np.float32)
    tok = data_lib.ByteTokenizer()
    for buckets in ((), (4, 8)):
        it = data_lib.ClassificationIterator(source, tok, batch_size=4, max_len=16, shuffle=True, num_epochs=1,
                                             length_buckets=buckets, teacher_offsets=(offsets, 0.25))
        seen = 0
        for batch in it:
            lengths = batch["length"] - 1  # BOS; record i has i + 1 bytes
            np.testing.assert_array_equal(batch["teacher_offset"][:, 1], lengths - 1)
            np.testing.assert_array_equal(batch["teacher_scale"], 0.25)
            seen += int(batch["example_valid"].sum())
        assert seen == 12
    with pytest.raises(ValueError, match="one row per record"):
        data_lib.ClassificationIterator(source, tok, batch_size=4, max_len=16, teacher_offsets=(offsets[:5], 1.0))
