"""The failure table: bad inputs and faults a user meets, each tried through the command
line, with the outcome asserted: one clear line (no traceback), nothing lost, the
previous checkpoint intact. ``docs/failures.md`` is generated from ``CASES`` below
(``python tests/test_failures.py`` rewrites it; a test checks it is current).

Tried elsewhere, listed here: SIGINT/SIGTERM and SIGKILL during training
(tests/test_training.py), the typed config's field checks (tests/test_config_files.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "listops_tiny.py")
DOC = os.path.join(ROOT, "docs", "failures.md")

# (id, what is tried, the outcome asserted)
CASES = [
    ("steps_negative", "`finetune ... --config.train.steps=-5`", "exit 2: `error: train.steps: must be > 0, got -5`"),
    ("lr_zero", "`--config.optim.lr=0`", "exit 2: `error: optim.lr: must be > 0, got 0.0`"),
    ("batch_zero", "`--config.data.batch_size=0`", "exit 2: `error: data.batch_size: must be > 0, got 0`"),
    ("unknown_field", "`--config.train.stepz=5`", "exit 2: `error: train.stepz: unknown field; did you mean 'steps'?`"),
    ("missing_config", "`--config configs/nope.py`", "exit 2: the file is not found, one line"),
    ("bad_variant", "`--config configs/imdb.py:huge`", "exit 2: the variants the file knows, one line"),
    ("missing_checkpoint", "`eval`, `quantize`, `export` of a directory with no checkpoint",
     "exit 2: `no checkpoints under ...: train a model there first`"),
    ("wrong_task", "`generate` on a classifier", "exit 2: `... is a 'classification' model; this needs a 'lm' model`"),
    ("empty_text", "`classify \"\"` and an empty `--file`", "exit: `error: text 1 is empty; there is nothing to classify`"),
    ("binary_file", "`classify --file` of binary data (NUL bytes)", "`error: FILE is binary (it holds NUL bytes), not text`"),
    ("not_utf8", "`classify --file` of non-UTF-8 bytes", "`error: FILE is not UTF-8 text (byte 0xff at offset 0)`"),
    ("missing_file", "`classify --file` of a missing file", "`error: --file FILE: No such file or directory`"),
    ("export_existing", "`export --out` an existing directory, without `--overwrite`", "exit 2, nothing written"),
    ("export_foreign", "`export --overwrite` into a directory the export did not write",
     "exit 2 before any work; the user's files intact"),
    ("export_cwd", "`export --overwrite --out .` (the current directory)", "exit 2; nothing deleted"),
    ("export_again", "`export --overwrite` over an earlier export", "replaced; the directory keeps the user's umask"),
    ("quantize_existing", "`quantize --out` a non-empty directory", "exit 2 before any evaluation or quantization"),
    ("other_run_in_workdir", "training into a `--workdir` holding a run of another width",
     "exit 2: `... holds a different run: model.d_model=32 (this config: 64)`; its checkpoints intact"),
    ("corrupt_checkpoint", "the newest checkpoint's array data truncated, then resume",
     "one warning line (step, reason, step used instead); resumes from the previous checkpoint"),
    ("data_gone", "`eval` of a run whose prepared data was deleted",
     "exit 2: `... is not prepared in DIR; prepare it with: memgpt-jax data prepare listops ...`"),
    ("newer_config", "opening a run whose saved config has a field this version does not know",
     "exit 2: `... its saved config is not valid (train.new_field: unknown field)`"),
    ("damaged_data", "`eval` after a prepared data file was truncated",
     "exit 2: `... split 'validation' in DIR is damaged ...; delete that directory and prepare it again with: ...`"),
    ("disk_full", "a resumed training run on a file system with 32 KiB left (an 8 MiB tmpfs, filled)",
     "exit 2: `could not write the checkpoint of step 2 in ... (no space left on device); the newest complete "
     "checkpoint is step 1 ...`; no partial files left; the rerun (with space) resumes from step 1"),
    ("checkpoint_paths", "`--checkpoint RUN/checkpoints` or `RUN/checkpoints/2` instead of `RUN`; a path that "
     "does not exist", "the run (that step) is used; `error: PATH does not exist: give a run directory ...`, exit 2"),
    ("killed_mid_save", "resume beside the temporary directory of a save killed half-way",
     "resumes from the newest complete checkpoint; the temporary directory is removed; no warning"),
    ("foreign_field", "`--config.optim.learning_rate=1e-3` (another library's name)",
     "exit 2: `error: optim.learning_rate: unknown field; did you mean 'lr'?`"),
    ("mistyped_flag", "`generate --temprature 0.5`; `classfy ...`",
     "exit 2: the usage of `generate` (not the top level's) and `did you mean --temperature?`; "
     "`unknown command 'classfy'; did you mean classify?`"),
    ("config_value_after_a_space", "`--config.train.steps 3` (a space, not `=`)",
     "exit 2: `... --config.train.steps takes its value after '=': --config.train.steps=VALUE`"),
    ("second_writer", "a training command on a run directory that a live command is writing",
     "exit 2 at once: `error: RUN is being written by `COMMAND` (pid P on HOST, since T); one run directory "
     "takes one writer ...`; the live run unharmed (two processes: `tests/test_training.py`)"),
    ("leftover_lock", "training on a run directory whose lock a killed process left",
     "one warning line naming the dead process; the lock is taken over and the command runs"),
    ("imported_no_data", "`eval` of a model imported from PyTorch (its run names no dataset)",
     "exit 2: `error: this run names no dataset (an imported model has none): give a prepared one with "
     "--dataset NAME ...`; with `--dataset` it evaluates"),
    ("closed_stdout", "`classify ... | head -c 1` (the reader closes the pipe)", "exit 141, no error line"),
    ("progress_in_a_log", "a command with progress whose stderr is a file, not a terminal",
     "plain lines, no carriage-return redraws"),
    ("derived_layout_missing", "`--config.model.attention.pattern=derived` with no layout file, or one that does "
     "not exist", "exit 2: `error: model.attention.layout_file: ... does not exist (write one with `memgpt-jax layout "
     "derive --teacher RUN --out FILE`)`"),
    ("derived_layout_shape", "a derived layout of another depth or width than the model",
     "exit 2: `error: ... the derived layout has 2 layers, the model 3: derive it with --layers 3`"),
]


def test_docs_page_is_current():
    assert os.path.isfile(DOC) and open(DOC).read() == render(), \
        "docs/failures.md is stale: run `python tests/test_failures.py`"


def render() -> str:
    lines = ["# What happens when things go wrong", "",
             "Generated from `tests/test_failures.py` (each row is a test that asserts the outcome).", "",
             "| case | what is tried | outcome |", "|---|---|---|"]
    lines += [f"| `{cid}` | {what} | {outcome} |" for cid, what, outcome in CASES]
    lines += ["", "Also tested: SIGINT/SIGTERM during training (the step finishes, its checkpoint is saved, "
              "exit 130/143, the rerun resumes bit for bit; a second signal exits at once) and SIGKILL "
              "(the rerun resumes from the newest complete checkpoint, bit for bit): `tests/test_training.py`.", ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A prepared ListOps data dir and a tiny trained classifier run."""
    from memgpt_jax.cli import main as cli_main

    root = tmp_path_factory.mktemp("failures")
    old = os.environ.get("MEMGPT_DATA_DIR")
    os.environ["MEMGPT_DATA_DIR"] = str(root / "tfds")
    run = str(root / "run")
    assert cli_main(["finetune", "--config", TINY, "--workdir", run, "--no-progress", "--config.train.steps=2",
                     "--config.train.eval_every=0", "--config.train.checkpoint_every=1"]) == 0
    yield root, run
    if old is None:
        os.environ.pop("MEMGPT_DATA_DIR", None)
    else:
        os.environ["MEMGPT_DATA_DIR"] = old


def _cli(capsys, *argv):
    """``(exit status, stderr)`` of a command run in this process."""
    from memgpt_jax.cli import main as cli_main

    capsys.readouterr()
    try:
        code = cli_main(list(argv))
    except SystemExit as e:  # what the process would exit with
        code = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int) and e.code:
            print(e.code, file=sys.stderr)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("override, message", [
    ("--config.train.steps=-5", "error: train.steps: must be > 0, got -5"),
    ("--config.optim.lr=0", "error: optim.lr: must be > 0, got 0.0"),
    ("--config.data.batch_size=0", "error: data.batch_size: must be > 0, got 0"),
    ("--config.train.stepz=5", "error: train.stepz: unknown field; did you mean 'steps'?"),
    ("--config.optim.learning_rate=1e-3", "error: optim.learning_rate: unknown field; did you mean 'lr'?"),
], ids=["steps_negative", "lr_zero", "batch_zero", "unknown_field", "foreign_field"])
def test_bad_config_values(tmp_path, capsys, override, message):
    code, err = _cli(capsys, "finetune", "--config", TINY, "--workdir", str(tmp_path / "w"), override)
    assert code == 2 and _one_error_line(err) == message


def test_derived_layout_files(tmp_path, capsys):
    """derived_layout_missing, derived_layout_shape: refused at the config, before any work."""
    import numpy as np

    from memgpt_jax.attention import derived

    base = ["finetune", "--config", TINY, "--workdir", str(tmp_path / "w"), "--config.model.attention.pattern=derived"]
    code, err = _cli(capsys, *base)
    assert code == 2 and "pattern 'derived' needs the file `memgpt-jax layout derive` wrote" in _one_error_line(err)
    code, err = _cli(capsys, *base, f"--config.model.attention.layout_file={tmp_path / 'nope.json'}")
    assert code == 2 and "nope.json does not exist (write one with `memgpt-jax layout derive" in _one_error_line(err)
    layout = str(tmp_path / "two_layers.json")
    spec = {"block_size": 16, "kind": "band", "seq_len": 64, "layers": [[{"offsets": [0, 1]}]] * 2}
    derived.write_file(layout, spec, np.ones((2, 1, 4, 4)), {})
    code, err = _cli(capsys, *base, f"--config.model.attention.layout_file={layout}", "--config.model.n_layers=3")
    assert code == 2 and "the derived layout has 2 layers, the model 3: derive it with --layers 3" in _one_error_line(err)
    assert not os.path.exists(tmp_path / "w")


def test_missing_config_and_bad_variant(tmp_path, capsys):
    code, err = _cli(capsys, "finetune", "--config", "configs/nope.py", "--workdir", str(tmp_path))
    assert code == 2 and "not found" in _one_error_line(err)
    code, err = _cli(capsys, "finetune", "--config", os.path.join(ROOT, "configs", "imdb.py:huge"),
                     "--workdir", str(tmp_path))
    assert code == 2 and "variant 'huge'" in _one_error_line(err)


@pytest.mark.slow
def test_missing_checkpoint_and_wrong_task(tmp_path, capsys, env):
    _, run = env
    for argv in (["eval", "--checkpoint", str(tmp_path)],
                 ["quantize", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "q")],
                 ["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "x"), "--format", "torch"]):
        code, err = _cli(capsys, *argv)
        assert code == 2 and "no checkpoints under" in _one_error_line(err), argv
    assert not os.path.exists(tmp_path / "q") and not os.path.exists(tmp_path / "x")
    code, err = _cli(capsys, "generate", "--checkpoint", run, "--prompt", "x")
    assert code == 2 and "is a 'classification' model" in _one_error_line(err)


def test_bad_text_inputs(tmp_path, capsys, env):
    _, run = env
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bin.dat").write_bytes(b"ab\x00cd")
    (tmp_path / "latin1.txt").write_bytes(b"\xff caf\xe9")
    for argv, message in [
        (["", ], "error: text 1 is empty; there is nothing to classify"),
        (["--file", str(tmp_path / "empty.txt")], f"error: {tmp_path / 'empty.txt'} is empty; there is nothing to classify"),
        (["--file", str(tmp_path / "bin.dat")], f"error: {tmp_path / 'bin.dat'} is binary (it holds NUL bytes), not text"),
        (["--file", str(tmp_path / "latin1.txt")], f"error: {tmp_path / 'latin1.txt'} is not UTF-8 text (byte 0xff at offset 0)"),
        (["--file", str(tmp_path / "nope.txt")], f"error: --file {tmp_path / 'nope.txt'}: No such file or directory"),
    ]:
        code, err = _cli(capsys, "classify", "--checkpoint", run, *argv)
        assert code != 0 and _one_error_line(err) == message
    for command in ("saliency", "attention-map"):  # refused before the run is opened
        code, err = _cli(capsys, command, "--checkpoint", run, "--text", " ", "--out", str(tmp_path / "x"))
        assert code == 2 and _one_error_line(err) == "error: --text is empty; there is nothing to look at"


def test_export_never_touches_files_it_did_not_write(tmp_path, capsys, env, monkeypatch):
    pytest.importorskip("torch")
    _, run = env
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, err = _cli(capsys, "export", "--checkpoint", run, "--out", str(out), "--format", "torch")
    assert code == 2 and "already exists" in _one_error_line(err)
    code, err = _cli(capsys, "export", "--checkpoint", run, "--out", str(out), "--format", "torch", "--overwrite")
    assert code == 2 and "was not written by memgpt-jax export" in _one_error_line(err)
    assert sorted(os.listdir(out)) == ["notes.txt"]
    monkeypatch.chdir(out)
    code, err = _cli(capsys, "export", "--checkpoint", run, "--out", ".", "--format", "torch", "--overwrite")
    assert code == 2 and "current directory" in _one_error_line(err)
    assert sorted(os.listdir(out)) == ["notes.txt"]

    fresh = tmp_path / "export"
    old_umask = os.umask(0o022)
    try:
        assert _cli(capsys, "export", "--checkpoint", run, "--out", str(fresh), "--format", "torch")[0] == 0
        assert _cli(capsys, "export", "--checkpoint", run, "--out", str(fresh), "--format", "torch", "--overwrite")[0] == 0
    finally:
        os.umask(old_umask)
    assert os.stat(fresh).st_mode & 0o777 == 0o755
    assert all(os.stat(fresh / f).st_mode & 0o777 == 0o644 for f in os.listdir(fresh))
    (fresh / "added.txt").write_text("mine")  # a file the export did not write: now refused
    code, err = _cli(capsys, "export", "--checkpoint", run, "--out", str(fresh), "--format", "torch", "--overwrite")
    assert code == 2 and "holds files the export did not write (added.txt)" in _one_error_line(err)
    assert (fresh / "added.txt").read_text() == "mine"


def test_quantize_checks_out_before_the_work(tmp_path, capsys, env):
    _, run = env
    out = tmp_path / "q"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = _cli(capsys, "quantize", "--checkpoint", run, "--out", str(out))
    assert code == 2 and "already exists and is not empty" in _one_error_line(err)
    assert "evaluating" not in err and sorted(os.listdir(out)) == ["keep.txt"]


def test_workdir_of_another_run_is_refused(capsys, env):
    _, run = env
    from memgpt_jax.training.checkpoint import Checkpointer

    before = Checkpointer(run).steps()
    code, err = _cli(capsys, "finetune", "--config", TINY, "--workdir", run, "--no-progress",
                     "--config.train.steps=4", "--config.model.d_model=64")
    line = _one_error_line(err)
    assert code == 2 and "holds a different run: model.d_model=32 (this config: 64)" in line
    assert Checkpointer(run).steps() == before


@pytest.mark.slow
def test_corrupt_newest_checkpoint_is_one_warning(tmp_path, capsys, env):
    _, run = env
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    newest = os.path.join(copy, "checkpoints", "2", "state")
    for root, _, files in os.walk(newest):
        for f in files:
            if os.path.basename(root) == "d":  # array data
                open(os.path.join(root, f), "wb").close()
    code, err = _cli(capsys, "finetune", "--config", TINY, "--workdir", copy, "--no-progress",
                     "--config.train.steps=3", "--config.train.eval_every=0", "--config.train.checkpoint_every=1")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "unusable checkpoint step 2 (" in warnings[0] and "using step 1" in warnings[0]
    assert "moved the unusable checkpoints [2]" in warnings[1]
    assert "resumed from" in err and len(err.splitlines()) < 15


def test_data_gone_says_how_to_prepare(tmp_path, capsys, env):
    root, run = env
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    from memgpt_jax.training.run import open_run

    data_dir = open_run(copy).config.data.data_dir
    assert data_dir == str(root / "tfds")  # the run recorded where its data is
    moved = str(tmp_path / "moved")
    shutil.move(data_dir, moved)
    try:
        code, err = _cli(capsys, "eval", "--checkpoint", copy)
    finally:
        shutil.move(moved, data_dir)
    line = _one_error_line(err)
    assert code == 2 and f"is not prepared in {data_dir}; prepare it with: memgpt-jax data prepare listops" in line


def test_config_from_a_newer_version(tmp_path, capsys, env):
    from memgpt_jax.training.checkpoint import load_params, save_params

    _, run = env
    params, meta = load_params(run)
    meta["config"]["train"]["new_field"] = 1
    save_params(str(tmp_path / "newer"), params, meta)
    code, err = _cli(capsys, "eval", "--checkpoint", str(tmp_path / "newer"))
    assert code == 2 and "its saved config is not valid (train.new_field: unknown field" in _one_error_line(err)



def test_damaged_data_says_how_to_prepare_again(tmp_path, capsys, env):
    root, run = env
    shard = next((root / "tfds").rglob("*-validation.array_record*"))
    saved = tmp_path / "shard"
    shutil.copy(shard, saved)
    try:
        with open(shard, "r+b") as f:
            f.truncate(os.path.getsize(shard) // 2)
        code, err = _cli(capsys, "eval", "--checkpoint", run)
    finally:
        shutil.copy(saved, shard)
    line = _one_error_line(err)
    assert code == 2 and "split 'validation' in " in line and "is damaged" in line, line
    assert "delete that directory and prepare it again with: memgpt-jax data prepare listops" in line


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs (mounting needs root, as in CI)."""
    path = tmp_path / "small"
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.decode().strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.slow
def test_disk_full_while_saving(capsys, env, small_disk):
    from memgpt_jax.training.checkpoint import Checkpointer

    run = str(small_disk / "run")
    args = ["finetune", "--config", TINY, "--workdir", run, "--no-progress", "--config.train.eval_every=0",
            "--config.train.checkpoint_every=1"]
    assert _cli(capsys, *args, "--config.train.steps=1")[0] == 0
    filler = small_disk / "filler"  # the disk is full but for 32 KiB: step 2 cannot be written
    with open(filler, "wb") as f:
        f.write(b"\0" * (shutil.disk_usage(small_disk).free - 32 * 1024))
    code, err = _cli(capsys, *args, "--config.train.steps=3")
    line = _one_error_line(err)
    assert code == 2 and "could not write the checkpoint of step 2" in line and "(no space left on device)" in line
    assert "the newest complete checkpoint is step 1" in line
    assert len(err.splitlines()) < 9, err
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["1"]  # the partial save is gone
    assert "Event loop is closed" not in capsys.readouterr().err
    filler.unlink()  # room again: the same command resumes
    code, err = _cli(capsys, *args, "--config.train.steps=3")
    assert code == 0 and f"resumed from {run}/checkpoints/1" in err, err
    assert Checkpointer(run).steps()[-1] == 3


@pytest.mark.slow
def test_killed_mid_save_leaves_nothing_in_the_way(tmp_path, capsys, env):
    """``kill -9`` during a save leaves Orbax's temporary directory (the save renames it
    only when complete); here that state is made directly: a step-3 temporary directory
    with half its files."""
    from memgpt_jax.training.checkpoint import Checkpointer

    _, run = env
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    partial = os.path.join(copy, "checkpoints", "3.orbax-checkpoint-tmp-1764633600000000")
    shutil.copytree(os.path.join(copy, "checkpoints", "2"), partial)
    for root, _, files in os.walk(partial):
        for f in files[::2]:
            os.remove(os.path.join(root, f))
    code, err = _cli(capsys, "finetune", "--config", TINY, "--workdir", copy, "--no-progress",
                     "--config.train.steps=3", "--config.train.eval_every=0", "--config.train.checkpoint_every=1")
    assert code == 0 and f"resumed from {copy}/checkpoints/2" in err and "warning" not in err, err
    assert Checkpointer(copy).steps()[-2:] == [2, 3]
    assert not [d for d in os.listdir(os.path.join(copy, "checkpoints")) if "tmp" in d]



def test_checkpoint_paths_inside_a_run(tmp_path, capsys, env):
    from memgpt_jax.training.run import open_run

    _, run = env
    assert open_run(os.path.join(run, "checkpoints")).path == run
    opened = open_run(os.path.join(run, "checkpoints", "1"))
    assert (opened.path, opened.step) == (run, 1)
    code, err = _cli(capsys, "eval", "--checkpoint", str(tmp_path / "nope"))
    assert code == 2 and "nope does not exist: give a run directory" in _one_error_line(err)


def test_mistyped_flag_shows_the_commands_usage(capsys):
    code, err = _cli(capsys, "generate", "--checkpoint", "runs/x", "--temprature", "0.5", "--prompt", "hi")
    assert code == 2 and err.startswith("usage: memgpt-jax generate ")
    assert err.strip().splitlines()[-1] == ("memgpt-jax generate: error: unrecognized arguments: --temprature 0.5; "
                                            "did you mean --temperature?")
    code, err = _cli(capsys, "classfy", "--checkpoint", "runs/x", "text")
    assert code == 2 and err.strip().splitlines()[-1] == (
        "memgpt-jax: error: unknown command 'classfy'; did you mean classify?")
    code, err = _cli(capsys, "finetune", "--config", TINY, "--workdir", "runs/x", "--config.train.steps", "3")
    assert code == 2 and err.strip().splitlines()[-1] == (
        "memgpt-jax finetune: error: --config.train.steps takes its value after '=': --config.train.steps=VALUE")


def test_one_writer_per_run_and_leftover_locks(tmp_path, capsys, env):
    import json
    import socket

    from memgpt_jax.training import runlock

    _, run = env
    argv = ("finetune", "--config", TINY, "--workdir", run, "--no-progress", "--config.train.steps=2",
            "--config.train.eval_every=0", "--config.train.checkpoint_every=1")
    live = runlock.RunLock(run, command="memgpt-jax finetune (the live one)").acquire()  # a live writer
    try:
        code, err = _cli(capsys, *argv)
    finally:
        live.release()
    line = _one_error_line(err)
    assert code == 2 and line.startswith(f"error: {run} is being written by `memgpt-jax finetune (the live one)` "
                                         f"(pid {os.getpid()} on {socket.gethostname()}, since ")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    with open(os.path.join(run, runlock.LOCK_FILE), "w") as f:  # what a killed run leaves
        json.dump({"host": socket.gethostname(), "pid": pid, "command": "memgpt-jax finetune ...",
                   "started": "earlier", "heartbeat": 0, "token": "old"}, f)
    code, err = _cli(capsys, *argv)
    warnings = [w for w in err.splitlines() if w.startswith("warning:")]
    assert code == 0 and len(warnings) == 1 and f"(pid {pid} on " in warnings[0], err
    assert "no longer running; taking over its lock" in warnings[0]
    assert not os.path.exists(os.path.join(run, runlock.LOCK_FILE))  # released when the command ended


@pytest.mark.slow
def test_imported_model_says_what_data_it_lacks(tmp_path, capsys, env):
    pytest.importorskip("torch")
    root, run = env
    assert _cli(capsys, "export", "--checkpoint", run, "--out", str(tmp_path / "torch"), "--format", "torch")[0] == 0
    assert _cli(capsys, "import", "--source", str(tmp_path / "torch"), "--format", "torch",
                "--workdir", str(tmp_path / "imported"))[0] == 0
    code, err = _cli(capsys, "eval", "--checkpoint", str(tmp_path / "imported"))
    assert code == 2 and _one_error_line(err).startswith(
        "error: this run names no dataset (an imported model has none): give a prepared one with --dataset NAME")
    code, err = _cli(capsys, "eval", "--checkpoint", str(tmp_path / "imported"), "--dataset", "memgpt_listops/tiny",
                     "--data-dir", str(root / "tfds"), "--no-progress")
    assert code == 0, err


@pytest.mark.slow
def test_closed_stdout_ends_quietly(env):
    _, run = env
    proc = subprocess.Popen([sys.executable, "-m", "memgpt_jax.cli", "classify", "--checkpoint", run,
                             *["[MAX 2 9 ]"] * 64], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141 and "error" not in err.lower() and "Traceback" not in err, err


def test_progress_in_a_log_is_plain_lines(tmp_path, capsys, env, monkeypatch):
    from memgpt_jax import progress

    _, run = env
    code, err = _cli(capsys, "eval", "--checkpoint", run)  # capsys: stderr is not a terminal
    assert code == 0 and "\r" not in err
    monkeypatch.setenv(progress.EVERY_ENV, "0")  # a line at every update
    bar = progress.bar(range(3), desc="work", unit="item")
    assert isinstance(bar, progress.PlainProgress) and list(bar) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == ["work: 1/3 item (33%)", "work: 2/3 item (67%)",
                                                       "work: 3/3 item (100%)"]
    assert "\r" not in "".join(lines)


if __name__ == "__main__":
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w") as f:
        f.write(render())
    print(f"wrote {DOC}")
