"""The `memgpt-jax` command layer: every command registered, --help without JAX,
model presets overridden through the run config's one override parser, `bench`'s checkout."""

import json
import os
import subprocess
import sys

import pytest

from memgpt_jax import cli

COMMANDS = {"info", "smoke", "bench", "data", "pretrain", "finetune", "distill", "demo", "quantize", "prune",
            "export", "import", "generate", "classify", "eval", "decode", "qa", "chat", "attention-map", "saliency",
            "average", "layout"}


def test_every_command_is_registered_and_help_imports_no_jax():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == COMMANDS
    code = ("import sys, memgpt_jax.cli as c; c.build_parser(); "
            "print([m for m in ('jax', 'flax', 'orbax', 'ml_collections') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # heavy imports wait for the command that needs them


def test_info_preset_with_config_overrides(capsys):
    assert cli.main(["info", "--preset", "tiny", "--config.model.n_layers=3",
                     "--config.model.attention.pattern=local", "--config.model.attention.block_size=16",
                     "--config.model.d_ff=96"]) == 0
    out = capsys.readouterr().out
    model = json.loads(out[:out.index("\nparameters:")])
    assert (model["n_layers"], model["d_ff"], model["attention"]["pattern"]) == (3, 96, "local")
    assert "GPT-2 compatible (exportable to Hugging Face): False" in out


@pytest.mark.parametrize("override, message", [
    ("--config.model.n_layerz=4", "model.n_layerz: unknown field; did you mean 'n_layers'?"),
    ("--config.model.n_layers=zero", "n_layers"),
])
def test_info_bad_override_is_one_line_and_exit_2(override, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["info", override])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bench_names_the_checkout_it_needs(monkeypatch, tmp_path):
    monkeypatch.setenv(cli.BENCHMARKS_ENV, str(tmp_path))
    with pytest.raises(SystemExit, match=f"set \\${cli.BENCHMARKS_ENV}"):
        cli.main(["bench", "--list"])
    monkeypatch.delenv(cli.BENCHMARKS_ENV)
    assert os.path.isfile(os.path.join(cli.benchmarks_root(), "benchmarks", "__main__.py"))
