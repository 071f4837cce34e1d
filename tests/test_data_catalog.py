"""What a dataset says about itself: label names stored with the prepared data, and how to
prepare it, declared on its builder (no tables of dataset names above the data layer)."""

import json
import os

from memgpt_jax import data as data_lib
from memgpt_jax.data.prepared import prepared_dir
from memgpt_jax.data.testing import write_aclimdb
from memgpt_jax.run_config import DataConfig
from memgpt_jax.training.inputs import prepare_command

IMDB = "memgpt_imdb/val10_seed0"


def test_label_names_travel_in_the_prepared_datasets_metadata(tmp_path):
    data_dir = str(tmp_path / "tfds")
    data_lib.prepare(data_lib.imdb_builder(source=write_aclimdb(str(tmp_path / "imdb.tar.gz")), data_dir=data_dir),
                     echo=lambda _: None)
    assert data_lib.dataset_metadata(IMDB, data_dir)["label_names"] == ["negative", "positive"]
    assert data_lib.label_names(IMDB, data_dir) == ("negative", "positive")
    # prepared before the builder stored them: its declaration stands in, not tfds' "neg"/"pos"
    meta_path = os.path.join(prepared_dir(IMDB, data_dir), "metadata.json")
    with open(meta_path) as f:
        meta = json.load(f)
    del meta["label_names"]
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    assert "label_names" not in data_lib.dataset_metadata(IMDB, data_dir)
    assert data_lib.label_names(IMDB, data_dir) == ("negative", "positive")
    assert data_lib.label_names("memgpt_imdb/other", data_dir) == ()  # not prepared here: none


def test_prepare_commands_come_from_the_builders():
    where = "--data-dir /nowhere"
    cases = {
        ("pairs", "memgpt_aeslc/aeslc"): "aeslc --source aeslc_train_dev.tar.gz",
        ("pairs", "memgpt_dialogue/kvret"): "dialogue --source DIALOGUES.json.gz --name kvret",
        ("pairs", "memgpt_pairs/multi30k"): "pairs --name multi30k --split SPLIT=FILES",
        ("text", "memgpt_text/shakespeare"): "text --files FILE... --name shakespeare",
        ("imdb", IMDB): "imdb --source ACLIMDB.tar.gz",
    }
    for (dataset, name), args in cases.items():
        command = prepare_command(DataConfig(dataset=dataset, name=name, data_dir="/nowhere"))
        assert command == f"memgpt-jax data prepare {args} {where} (see its --help)", command
    assert data_lib.prepare_arguments("someone_elses/x") is None
