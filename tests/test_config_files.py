"""The typed run configuration: every experiment config loads and validates, overrides
go through ml_collections, bad values fail with one line naming the field, and the
saved configs of older runs still load."""

import dataclasses
import glob
import os

import pytest

from memgpt_jax import run_config
from memgpt_jax.run_config import ConfigError, RunConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "listops_tiny.py")
VARIANTS = {
    "listops.py": ["teacher", "student", "demo_teacher", "demo_student", "lra_teacher", "lra_student"],
    "imdb.py": ["pretrain", "pretrain_student", "teacher", "teacher_long", "student", "tiny", "teacher_tpu"],
    "multi30k.py": ["teacher", "student", "tiny"],
    "aeslc.py": ["teacher", "student", "tiny", "lm", "lm_student", "teacher_english_lm", "teacher_copy",
                 "student_copy", "teacher_copy_more", "teacher_copy_lm", "student_copy_lm"],
    "kvret.py": ["teacher", "student", "teacher_scratch", "student_scratch", "teacher_more", "teacher_dialogues",
                 "student_dialogues", "student_dialogues_kb", "teacher_copy", "student_copy", "student_copy_more", "tiny"],
    "squad.py": ["teacher", "student", "tiny"],
    "lra_imdb_bytes.py": ["dense", "sparse", "tiny"],
    "lra_listops.py": ["dense", "sparse", "tiny"],
    "shakespeare.py": ["base", "sparse", "small", "tiny"],
    "listops_tiny.py": [None],
}


def test_every_config_file_is_listed():
    files = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))}
    assert files == set(VARIANTS)


@pytest.mark.parametrize("path", [f"{f}:{v}" if v else f for f, vs in VARIANTS.items() for v in vs])
def test_config_loads_and_round_trips(path):
    config = run_config.load(os.path.join(ROOT, "configs", path))
    assert isinstance(config, RunConfig) and config.train.steps > 0
    assert RunConfig.from_dict(config.to_dict()) == config  # what a run saves is what it loads


def test_each_default_is_defined_once():
    """The ConfigDict config files start from is built from the dataclasses' defaults."""
    defaults = run_config.defaults("classification").to_dict()
    typed = RunConfig(task="classification").to_dict()
    assert RunConfig.from_dict(defaults) == RunConfig.from_dict(typed)
    assert defaults["optim"]["b2"] == 0.98 and defaults["train"]["checkpoint_every"] == 500


def test_overrides_are_typed():
    c = run_config.load(TINY, ["--config.train.steps=7", "--config.optim.lr=2", "--config.model.attention.pattern=local",
                               "--config.train.mesh=(1,2,4)", "--config.data.data_dir=/data", "--config.model.d_ff=48",
                               "--config.train.async_checkpoint=false"])
    assert (c.train.steps, c.optim.lr, c.model.attention.pattern, c.train.mesh) == (7, 2.0, "local", (1, 2, 4))
    assert (c.data.data_dir, c.model.d_ff, c.train.async_checkpoint) == ("/data", 48, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.train.steps = 3


@pytest.mark.parametrize("overrides, message", [
    (["--config.train.steps=-5"], "^train.steps: must be > 0, got -5$"),
    (["--config.train.stepz=1"], "^train.stepz: unknown field; did you mean 'steps'\\?$"),
    (["--config.train.steps=abc"], "config.train.steps=abc"),
    (["--config.optim.lr=0"], "^optim.lr: must be > 0"),
    (["--config.data.batch_size=0"], "^data.batch_size: must be > 0"),
    (["--config.optim.schedule=cosin"], "^optim.schedule: unknown value 'cosin'"),
    (["--config.model.n_heads=3"], "^model.n_heads: d_model=32 is not divisible"),
    (["--config.model.attention.pattern=diagonal"], "^model.attention.pattern: unknown pattern"),
    (["--config.data.seq_len=4096"], "^data.seq_len: 4096 exceeds model.max_len=64"),
    (["--config.distill.alpha=2"], "^distill.alpha: must be in \\[0, 1\\]"),
    (["--config.train.mesh=(1,-1,-1)"], "^train.mesh: needs three axis sizes"),
    (["train.steps=3"], "must look like --config.section.field=value"),
])
def test_bad_values_fail_with_one_line_naming_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        run_config.load(TINY, overrides)
    assert "\n" not in str(info.value)


def test_bad_config_files_fail_with_one_line():
    with pytest.raises(ConfigError, match="variant 'huge'") as info:
        run_config.load(os.path.join(ROOT, "configs", "imdb.py:huge"))
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        run_config.load(os.path.join(ROOT, "configs", "nope.py"))


def test_from_dict_rejects_unknown_and_mistyped_fields():
    data = RunConfig().to_dict()
    with pytest.raises(ConfigError, match="^optim.lrr: unknown field; did you mean 'lr'"):
        RunConfig.from_dict({**data, "optim": {**data["optim"], "lrr": 1.0}})
    with pytest.raises(ConfigError, match="^train.steps: expected int, got str"):
        RunConfig.from_dict({**data, "train": {**data["train"], "steps": "10"}})
    assert RunConfig.from_dict({"task": "qa"}).task == "qa"  # missing fields take their defaults


def test_saved_configs_of_older_runs_load():
    """Runs saved before the typed config (ConfigDict dicts, old attention names) still open."""
    old = RunConfig(task="classification").to_dict()
    old["model"]["attention"] = {"pattern": "dense", "impl": "dense", "block_size": 16}
    del old["data"]["label_names"], old["data"]["doc_stride"], old["data"]["pack"]  # fields added later
    config = RunConfig.from_saved(old)
    assert config.model.attention.impl == "reference" and config.data.doc_stride == 128


def test_replace_changes_fields_of_sections():
    c = RunConfig().replace(train={"steps": 5}, model={"attention": {"pattern": "local"}})
    assert (c.train.steps, c.model.attention.pattern, c.model.attention.block_size) == (5, "local", 128)
    with pytest.raises(ConfigError, match="^train.steps"):
        RunConfig().replace(train={"steps": 0})
