"""The typed run configuration: every experiment config loads and validates, overrides
go through ml_collections, bad values fail with one line naming the field, and the
saved configs of older runs still load."""

import ast
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
    "imdb.py": ["pretrain", "pretrain_student", "teacher", "teacher_long", "student", "tiny", "teacher_tpu",
                "scratch_teacher", "scratch_student"],
    "multi30k.py": ["teacher", "student", "tiny"],
    "aeslc.py": ["teacher", "student", "tiny", "lm", "lm_student", "teacher_english_lm", "teacher_copy",
                 "student_copy", "teacher_copy_more", "teacher_copy_lm"],
    "kvret.py": ["teacher", "student", "teacher_more", "teacher_dialogues", "student_dialogues", "student_dialogues_kb",
                 "teacher_copy", "student_copy", "student_copy_more", "tiny"],
    "squad.py": ["teacher", "student", "tiny"],
    "lra_imdb_bytes.py": ["dense", "sparse", "tiny"],
    "lra_listops.py": ["dense", "sparse", "tiny"],
    "shakespeare.py": ["base", "sparse", "small", "tiny"],
    "listops_tiny.py": [None],
}
SPECS = [f"{f}:{v}" if v else f for f, vs in VARIANTS.items() for v in vs]


def test_every_config_file_is_listed():
    files = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))}
    assert files == set(VARIANTS)


@pytest.mark.parametrize("path", SPECS)
def test_config_loads_and_round_trips(path):
    config = run_config.load(os.path.join(ROOT, "configs", path))
    assert isinstance(config, RunConfig) and config.train.steps > 0
    assert RunConfig.from_dict(config.to_dict()) == config  # what a run saves is what it loads


def test_every_variant_is_listed():
    """The table above is each file's whole table (a variant added to a file is tested here)."""
    for name, variants in VARIANTS.items():
        with pytest.raises(ConfigError, match=r"unknown variant 'nope'; choose one of (\(.*\))$") as info:
            run_config.load(os.path.join(ROOT, "configs", f"{name}:nope"))
        listed = ast.literal_eval(info.value.args[0].rsplit("choose one of ", 1)[1])
        assert set(listed) == {v for v in variants if v}, name


def test_variant_table_inherits_and_names_what_is_wrong():
    base = dict(task="classification", model=dict(d_model=64, n_heads=4, attention=dict(pattern="local", window=2)),
                data=dict(listops=dict(preset="tiny", max_length=96)), train=dict(steps=10))
    get_config = run_config.variant_table(base, {
        "small": dict(model=dict(d_model=32, attention=dict(window=1))),
        "small_long": dict(based_on="small", train=dict(steps=20), data=dict(listops=dict(preset="lra"))),
    }, default="small")
    long = RunConfig.from_dict(get_config("small_long").to_dict())
    assert (long.task, long.model.d_model, long.model.n_heads, long.train.steps) == ("classification", 32, 4, 20)
    assert (long.model.attention.pattern, long.model.attention.window) == ("local", 1)  # nested sections merge
    assert long.data.listops == {"preset": "lra"}  # generator settings are replaced whole
    assert get_config().model.d_model == 32 and get_config("small").train.steps == 10
    assert run_config.variant_table(base)().model.d_model == 64  # no variants: the base
    with pytest.raises(ValueError, match=r"^unknown variant 'smal'; choose one of \('small', 'small_long'\)$"):
        get_config("smal")
    with pytest.raises(ValueError, match="^variant 'a': based_on unknown variant 'c'$"):
        run_config.variant_table(base, {"a": dict(based_on="c")}, default="a")
    with pytest.raises(ValueError, match="^variant 'a': based_on cycle a -> b -> a$"):
        run_config.variant_table(base, {"a": dict(based_on="b"), "b": dict(based_on="a")}, default="a")
    with pytest.raises(ValueError, match="^default variant 'b' not in \\('a',\\)$"):
        run_config.variant_table(base, {"a": {}}, default="b")


def _paths(spec: str) -> dict[str, str]:
    """The string fields of a loaded config, by dotted name."""
    def walk(tree, prefix):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            elif isinstance(value, str):
                yield f"{prefix}{key}", value
    return dict(walk(run_config.load(os.path.join(ROOT, "configs", spec)).to_dict(), ""))


def test_memgpt_runs_moves_every_run_path(monkeypatch):
    """Configs name the runs they read (backbones, teachers, tokenizers) under one root."""
    monkeypatch.delenv("MEMGPT_RUNS", raising=False)
    default = {spec: _paths(spec) for spec in SPECS}
    assert default["imdb.py:student"]["distill.teacher"] == "runs/imdb/teacher"
    monkeypatch.setenv("MEMGPT_RUNS", "/x")
    moved = {spec: _paths(spec) for spec in SPECS}
    count = 0
    for spec, fields in default.items():
        for field, value in fields.items():
            expected = "/x/" + value[len("runs/"):] if value.startswith("runs/") else value
            assert moved[spec][field] == expected, (spec, field)
            count += value.startswith("runs/")
    assert count > 50 and moved["kvret.py:student_copy"]["distill.teacher"] == "/x/kvret/teacher_copy"
    assert run_config.runs_path("imdb", "lm") == "/x/imdb/lm"


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
