"""Every experiment config loads, validates, and accepts overrides."""

import glob
import os

import pytest

from memgpt_jax.config import ModelConfig
from memgpt_jax.training.config_io import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "listops.py": ["teacher", "student", "lra_teacher", "lra_student"],
    "imdb.py": ["pretrain", "pretrain_student", "teacher", "student", "tiny", "teacher_tpu"],
    "multi30k.py": ["teacher", "student", "tiny"],
    "lra_imdb_bytes.py": ["dense", "sparse", "tiny"],
    "lra_listops.py": ["dense", "sparse", "tiny"],
    "shakespeare.py": ["base", "sparse", "small", "tiny"],
    "listops_tiny.py": [None],
}


def test_every_config_file_is_listed():
    files = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))} - {"base.py"}
    assert files == set(VARIANTS)


@pytest.mark.parametrize("path", [f"{f}:{v}" if v else f for f, vs in VARIANTS.items() for v in vs])
def test_config_loads_and_validates(path):
    config = load_config(os.path.join(ROOT, "configs", path))
    model = ModelConfig.from_dict(config.model.to_dict())
    assert config.task in ("lm", "classification", "qa")
    assert config.data.seq_len <= model.max_len
    assert config.train.steps > 0


def test_overrides_are_typed_and_checked():
    path = os.path.join(ROOT, "configs", "listops_tiny.py")
    c = load_config(path, ["--config.train.steps=7", "--config.optim.lr=2", "--config.model.attention.pattern=local",
                           "--config.train.mesh=(1,2,4)"])
    assert (c.train.steps, c.optim.lr, c.model.attention.pattern, c.train.mesh) == (7, 2.0, "local", (1, 2, 4))
    with pytest.raises(KeyError, match="unknown field"):
        load_config(path, ["--config.train.stepz=1"])
    with pytest.raises(TypeError):
        load_config(path, ["--config.train.steps=abc"])
    with pytest.raises(ValueError, match="variant"):
        load_config(os.path.join(ROOT, "configs", "imdb.py:huge"))
