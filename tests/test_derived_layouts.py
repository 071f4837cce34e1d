"""Layouts derived from a teacher's attention (issue 43): the fit, the file, the config, and
the recipe derive -> distil -> evaluate -> export at tiny scale."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from memgpt_jax.attention import derived as D, layout as L
from memgpt_jax.config import AttentionConfig, ModelConfig, tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mass(n: int, offsets: dict[int, float], globals_: dict[int, float], noise: float = 0.01, seed: int = 0):
    """A causal block-mass map: weight on the given offsets and global columns, a little elsewhere."""
    rng = np.random.default_rng(seed)
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    m = noise * rng.random((n, n))
    for d, w in offsets.items():
        m += w * (i - j == d)
    for g, w in globals_.items():
        m += w * (j == g)
    return np.where(j <= i, m, 0.0)


def test_band_fit_finds_the_offsets_and_globals_that_hold_the_mass():
    n = 16
    mass = _mass(n, {0: 1.0, 3: 0.8}, {0: 0.6})
    # room for exactly the diagonal (16 tiles), offset 3 (13) and global column 0 (14 more)
    assert D.fit_band(mass, density=43 / n**2) == {"offsets": [0, 3], "globals": [0]}
    more = D.fit_band(mass, density=0.25)  # the rest of the budget goes to the noise, never past it
    assert {3} <= set(more["offsets"]) and 0 in more["globals"]
    # the budget holds: kept tiles never exceed it, and the diagonal is always there
    for density in (0.07, 0.15, 0.3, 0.5):
        head = D.fit_band(_mass(n, {0: 1.0, 1: 0.5, 5: 0.3}, {2: 0.4}, seed=1), density)
        kept = L.derived({"block_size": 8, "kind": "band", "seq_len": 8 * n, "layers": [[head]]}, 0, 8 * n)
        assert 0 in head["offsets"] and kept.n_kept_blocks <= D.budget_blocks(density, n)
    with pytest.raises(ValueError, match="density"):
        D.fit_band(mass, 0.0)


def test_band_fit_keeps_at_least_the_mass_of_any_window_and_global_layout_of_its_budget():
    n, block = 16, 8
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    for seed in range(4):
        rng = np.random.default_rng(seed)
        mass = np.where(j <= i, rng.random((n, n)) ** 4 + (i - j == 1) * rng.random() + (j == 0) * rng.random(), 0.0)
        for window in (0, 1, 2):
            for n_global in (1, 2):
                fixed = L.causal(n * block, block=block) & (L.local(n * block, block=block, window=window, causal=False)
                                                            | L.global_blocks(n * block, block=block, n=n_global))
                head = D.fit_band(mass, fixed.n_kept_blocks / n**2)
                ours = L.derived({"block_size": block, "kind": "band", "seq_len": n * block, "layers": [[head]]}, 0,
                                 n * block)
                assert ours.n_kept_blocks <= fixed.n_kept_blocks
                assert D.kept_mass(mass[None], ours)[0] >= D.kept_mass(mass[None], fixed)[0] - 1e-9


def test_band_fit_takes_dense_leading_rows_where_early_queries_concentrate():
    n, block = 8, 8
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    mass = np.where(j <= i, 1.0 / (i + 1), 0.0)  # every query spreads evenly over what it may see
    head = D.fit_band(mass, 14 / n**2)  # the diagonal and 6 more tiles: query blocks 1..3 in full
    assert head == {"offsets": [0], "globals": [], "dense_rows": 4}
    lay = L.derived({"block_size": block, "kind": "band", "seq_len": n * block, "layers": [[head]]}, 0, 4 * n * block)
    assert lay.n_kept_blocks == 4 * n + 6  # at any length: the same first rows, then the diagonal


def test_kernel_tiles_count_the_padded_row_groups():
    from memgpt_jax.attention.block_layout import padded_tiles

    assert padded_tiles([3] * 16) == 48  # even rows: nothing padded
    # a causal triangle of 11 rows then 5 rows of 3: the rows split in three groups, each padded to its longest
    counts = [*range(1, 12), *[3] * 5]
    assert padded_tiles(counts) == 8 * 3 + 4 * 7 + 4 * 11 > sum(counts)
    assert padded_tiles(counts, max_groups=1) == 16 * 11
    n, block = 16, 8
    spec = {"block_size": block, "kind": "band", "seq_len": n * block,
            "layers": [[{"offsets": [0], "globals": [0, 2], "dense_rows": 11}]]}
    lay = L.derived(spec, 0, n * block)
    assert lay.kernel_tiles == 96 == sum(len(rows) * idx.shape[-1] for rows, idx, _ in lay.row_groups())
    assert lay.n_kept_blocks == 81


def test_band_fit_within_the_kernels_tiles():
    """``max_tiles``: no layer costs the XLA kernel more tiles than asked (the heads of a layer
    together: the kernel pads a row to its longest across heads); without it, the fit spends its
    kept blocks on dense leading rows that pad the row groups."""
    n, block = 16, 8
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    mass = np.stack([np.where(j <= i, 1.0 / (i + 1) + (j == 0) + (i - j == h + 1), 0.0) for h in range(2)])[None]
    fixed = L.causal(n * block, block=block) & (L.local(n * block, block=block, window=2, causal=False)
                                                | L.global_blocks(n * block, block=block, n=3))
    density, tiles = fixed.n_kept_blocks / n**2, fixed.kernel_tiles
    free = D.fit(mass, density, block=block)
    assert L.derived(free, 0, n * block).kernel_tiles > tiles  # the case the budget is for
    spec = D.fit(mass, density, block=block, max_tiles=tiles)
    lay = L.derived(spec, 0, n * block)
    assert lay.kernel_tiles <= tiles and lay.n_kept_blocks <= fixed.n_kept_blocks
    assert D.kept_mass(mass[0], lay).mean() >= D.kept_mass(mass[0], fixed).mean() - 1e-9  # still no worse than it
    assert D.summarize(spec, mass)["kernel_tiles"] == [lay.kernel_tiles]
    with pytest.raises(ValueError, match="below what the diagonal alone costs \\(16 tiles\\)"):
        D.fit(mass, density, block=block, max_tiles=15)
    with pytest.raises(ValueError, match="band layouts"):
        D.fit(mass, density, block=block, max_tiles=tiles, raw=True)


def test_fit_shares_a_layout_across_heads_unless_their_own_keep_more():
    """Heads whose own layouts keep no more mass than one shared layout get the shared one (the
    kernel gathers per head otherwise); heads that attend differently keep their own."""
    n, block = 16, 8
    alike = np.stack([_mass(n, {0: 1.0, 3: 0.8}, {0: 0.6}, seed=s) for s in (0, 1)])[None]  # noise apart
    shared = D.fit(alike, 43 / n**2, block=block)
    assert shared["layers"][0][0] == shared["layers"][0][1] == {"offsets": [0, 3], "globals": [0]}
    apart = np.stack([_mass(n, {0: 1.0, 3: 0.8}, {}, noise=0.0), _mass(n, {0: 1.0, 5: 0.8}, {}, noise=0.0)])[None]
    own = D.fit(apart, 29 / n**2, block=block)  # room for one offset: each head its own
    assert [h["offsets"] for h in own["layers"][0]] == [[0, 3], [0, 5]]
    assert L.derived(own, 0, n * block).heads == 2 and L.derived(shared, 0, n * block).heads == 1
    # a tolerance as large as the whole mass shares everything
    assert D.fit(apart, 29 / n**2, block=block, share_tolerance=1.0)["layers"][0][0] == \
        D.fit(apart, 29 / n**2, block=block, share_tolerance=1.0)["layers"][0][1]


def test_map_fit_keeps_the_heaviest_tiles_and_the_diagonal():
    n = 8
    mass = _mass(n, {0: 0.1}, {}, noise=0.0)
    mass[5, 2] = mass[7, 0] = 1.0
    rows = D.fit_map(mass, density=(n + 2) / n**2)["rows"]
    assert rows[5] == [2, 5] and rows[7] == [0, 7] and all(rows[i] == [i] for i in (0, 1, 2, 3, 4, 6))


def test_kept_mass_and_grouping():
    n = 8
    mass = np.stack([_mass(n, {0: 1.0, 1: 1.0}, {}, noise=0.0), _mass(n, {0: 1.0}, {0: 1.0}, noise=0.0)])
    window = L.causal(8 * n, block=8) & L.local(8 * n, block=8, window=1)
    kept = D.kept_mass(mass, window)
    assert kept[0] == pytest.approx(1.0) and 0.5 < kept[1] < 1.0
    grouped = D.group_mass(np.stack([mass, 3 * mass]), layers=1, heads=1)  # [2, 2, n, n] -> [1, 1, n, n]
    np.testing.assert_allclose(grouped[0, 0], 2 * mass.mean(axis=0))
    with pytest.raises(ValueError, match="--heads 3: must be in 1..2"):
        D.group_mass(mass[None], layers=1, heads=3)


def _write(tmp_path, spec, name="layout.json"):
    mass = np.ones((len(spec["layers"]), len(spec["layers"][0]), spec["seq_len"] // spec["block_size"],
                    spec["seq_len"] // spec["block_size"]))
    path = str(tmp_path / name)
    D.write_file(path, spec, np.tril(mass), {"teacher": "t", "split": "validation", "examples": 1})
    return path


BAND = {"block_size": 16, "kind": "band", "seq_len": 64,
        "layers": [[{"offsets": [0, 1], "globals": [0]}], [{"offsets": [0], "globals": [1]}]]}


def test_config_reads_the_file_once_and_checks_it_against_the_model(tmp_path):
    path = _write(tmp_path, BAND)
    attn = AttentionConfig(pattern="derived", layout_file=path, block_size=128)
    assert attn.block_size == 16 and json.loads(attn.derived)["layers"] == BAND["layers"]
    cfg = tiny(attention=attn)  # 2 layers, max_len 128: a band layout holds at any length
    os.remove(path)  # the config carries the layout: the file is not read again
    again = ModelConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg and hash(again) == hash(cfg)
    assert L.from_config(cfg.attention, 128, 128, layer=1) != L.from_config(cfg.attention, 128, 128, layer=0)
    from memgpt_jax import flops  # a derived layout's FLOPs count each layer's kept blocks
    kept = [L.from_config(cfg.attention, 128, 128, layer=i).n_kept_blocks for i in (0, 1)]
    assert flops.keys_per_query(cfg, 128) == pytest.approx(np.mean(kept) * 16**2 / 128)
    with pytest.raises(ValueError, match="has 2 layers, the model 3: derive it with --layers 3"):
        tiny(n_layers=3, attention=attn)
    with pytest.raises(ValueError, match="does not exist"):
        AttentionConfig(pattern="derived", layout_file=path)
    with pytest.raises(ValueError, match="pattern=derived"):
        AttentionConfig(pattern="bigbird", layout_file=path)
    raw = _write(tmp_path, {**BAND, "kind": "map", "layers": [[{"rows": [[0], [0, 1], [2], [1, 3]]}]] * 2}, "raw.json")
    with pytest.raises(ValueError, match="raw map of 64 tokens, max_len is 128"):
        tiny(attention=dict(pattern="derived", layout_file=raw))
    assert tiny(max_len=64, attention=dict(pattern="derived", layout_file=raw)).attention.derived_spec["kind"] == "map"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "memgpt-jax-derived-layout/1", **BAND,
                               "layers": [[{"offsets": [1], "globals": []}]]}))
    with pytest.raises(ValueError, match="offsets must include 0"):
        AttentionConfig(pattern="derived", layout_file=str(bad))


@pytest.fixture(scope="module")
def listops_data(tmp_path_factory):
    from memgpt_jax import data as data_lib

    d = str(tmp_path_factory.mktemp("tfds"))
    data_lib.prepare(data_lib.listops_builder("tiny", data_dir=d), echo=lambda _: None)
    return d


TINY_CFG = os.path.join(ROOT, "configs", "listops_tiny.py")
TINY = ["--no-progress", "--config.train.steps=4", "--config.model.n_heads=4"]


@pytest.fixture(scope="module")
def tiny_teacher(listops_data, tmp_path_factory):
    """A 4-step dense teacher on the tiny ListOps data (its data dir in ``MEMGPT_DATA_DIR`` while
    the module's tests run)."""
    from memgpt_jax.cli import main as cli_main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEMGPT_DATA_DIR", listops_data)
        teacher = str(tmp_path_factory.mktemp("derived") / "teacher")
        assert cli_main(["finetune", "--config", TINY_CFG, "--workdir", teacher, *TINY]) == 0
        yield teacher


def _derive(teacher: str, layout: str) -> None:
    from memgpt_jax.cli import main as cli_main

    if not os.path.exists(layout):
        assert cli_main(["layout", "derive", "--teacher", teacher, "--split", "validation", "--examples", "12",
                         "--density", "0.4", "--out", layout, "--no-progress",
                         "--share-tolerance", "-1"]) == 0  # every head its own layout: the per-head paths


def test_derive_refit_and_show(tiny_teacher, tmp_path, capsys):
    """`layout derive` on a teacher's validation split (wrong inputs refused first), `--from` another
    density without the teacher, `layout show`."""
    from memgpt_jax.cli import main as cli_main

    teacher, layout = tiny_teacher, str(tmp_path / "derived.json")
    capsys.readouterr()
    # wrong inputs first: each is one line, before any work
    for argv, text in (
            (["--density", "0"], "--density must be in"),
            (["--density", "0.5", "--heads", "5"], "--heads 5: must be in 1..4"),
            (["--density", "0.5", "--split", "nope"], "nope"),
    ):
        assert cli_main(["layout", "derive", "--teacher", teacher, "--out", layout, "--examples", "4", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and text in err[0], err
    assert not os.path.exists(layout)

    _derive(teacher, layout)
    out = capsys.readouterr().out
    payload = json.loads(open(layout).read())
    assert payload["kind"] == "band" and len(payload["layers"]) == 2 and len(payload["layers"][0]) == 4
    assert payload["provenance"]["examples"] == 12 and payload["provenance"]["split"] == "validation"
    assert 0.0 < payload["kept_mass"]["overall"] <= 1.0 and payload["density"]["overall"] <= 0.4 + 1e-9
    assert f"--config.model.attention.layout_file={layout}" in out and "of the teacher's attention mass" in out
    refit = str(tmp_path / "refit.json")  # another density from the same measurement, no teacher run
    assert cli_main(["layout", "derive", "--from", layout, "--density", "0.3", "--out", refit, "--heads", "1"]) == 0
    again = json.loads(open(refit).read())
    assert again["provenance"]["examples"] == 12 and again["provenance"]["density"] == 0.3
    assert len(again["layers"][0]) == 1 and again["density"]["overall"] <= 0.3 + 1e-9
    assert cli_main(["layout", "derive", "--from", layout, "--density", "0.3", "--out", refit,
                     "--max-kernel-tiles", "5"]) == 0  # 4 blocks: the diagonal (4) and one tile more
    again = json.loads(open(refit).read())
    assert again["provenance"]["max_kernel_tiles"] == 5 and max(again["kernel_tiles"]) <= 5
    assert "tiles a head per layer (rows padded per group), within --max-kernel-tiles 5" in capsys.readouterr().out
    for argv, text in ((["--from", str(tmp_path / "none.json")], "no such file"),
                       (["--from", layout, "--max-kernel-tiles", "0"], "--max-kernel-tiles must be >= 1")):
        assert cli_main(["layout", "derive", *argv, "--density", "0.3", "--out", refit]) == 2
        assert text in capsys.readouterr().err
    assert cli_main(["layout", "derive", "--from", layout, "--density", "0.3", "--out", refit,
                     "--max-kernel-tiles", "3"]) == 2
    assert "below what the diagonal alone costs (4 tiles)" in capsys.readouterr().err
    assert cli_main(["layout", "derive", "--density", "0.3", "--out", refit]) == 2
    assert "give --teacher RUN" in capsys.readouterr().err
    mass = D.read_mass(layout)
    assert mass.shape == (2, 4, 4, 4)
    np.testing.assert_allclose(mass.sum(axis=(2, 3)), mass.sum(axis=(2, 3))[0, 0], rtol=1e-5)  # every head: all queries
    capsys.readouterr()
    assert cli_main(["layout", "show", layout]) == 0
    shown = capsys.readouterr().out
    assert "layer 1 head 3: offsets [0" in shown
    assert "% on the diagonal blocks; by key block 0: " in shown  # from the mass array beside the file


@pytest.mark.slow
def test_recipe_derive_distil_evaluate_export(tiny_teacher, tmp_path, capsys):
    """docs/derived_layouts.md at tiny scale: on the teacher's derived layout (per layer, per head)
    a student is distilled, evaluated and exported (the torch export gives the JAX logits), and the
    layout is drawn over the teacher's maps."""
    import jax.numpy as jnp
    import torch

    from memgpt_jax.cli import main as cli_main
    from memgpt_jax.export.torch_model import TorchGPT
    from memgpt_jax.training.run import open_run

    teacher, student, layout = tiny_teacher, str(tmp_path / "student"), str(tmp_path / "derived.json")
    tiny_cfg, common = TINY_CFG, TINY
    _derive(teacher, layout)
    assert cli_main(["distill", "--config", tiny_cfg, "--workdir", student, *common,
                     f"--config.distill.teacher={teacher}", "--config.model.attention.pattern=derived",
                     f"--config.model.attention.layout_file={layout}"]) == 0
    os.rename(layout, layout + ".moved")  # the student's run carries its layout
    run = open_run(student)
    assert run.model_config.attention.pattern == "derived" and run.model_config.attention.block_size == 16
    assert cli_main(["eval", "--checkpoint", student, "--split", "validation"]) == 0
    assert "accuracy" in capsys.readouterr().out

    exported = str(tmp_path / "exported")
    assert cli_main(["export", "--checkpoint", student, "--format", "torch", "--out", exported]) == 0
    tm = TorchGPT.from_pretrained(exported, attention_impl="einsum")
    assert tuple(tm.layout_mask.shape) == (2, 4, 64, 64)  # one mask per layer and head
    ids = np.random.default_rng(0).integers(4, 20, size=(2, 64))
    ours = run.model.apply({"params": run.params}, jnp.asarray(ids)).logits
    with torch.no_grad():
        theirs = tm(torch.as_tensor(ids)).logits.numpy()
    np.testing.assert_allclose(theirs, np.asarray(ours), atol=1e-4, rtol=0)

    os.rename(layout + ".moved", layout)
    maps = tmp_path / "maps"
    assert cli_main(["attention-map", "--checkpoint", teacher, "--text", "[MAX 2 9 [MIN 4 7 ] 0 ]", "--out",
                     str(maps), "--layout", layout, "--layers", "1"]) == 0
    assert (maps / "layer_1.png").read_bytes()[:4] == b"\x89PNG"


def test_benchmark_matches_densities_and_reports(tmp_path):
    """benchmarks/derived_layouts.py: fixed layouts matched to a density, a derived layout equal to a
    fixed one recognised as such, and the section's ratios (its runs are hours: RESULTS.md)."""
    from benchmarks import derived_layouts as bench

    config, d = bench.closest("window_global", 0.18, 128, 2048)
    assert config == {"pattern": "window_global", "window": 0, "n_global": 2} and d == pytest.approx(45 / 256)
    assert bench.density_of(config, 128, 2048) == (pytest.approx(45 / 256), 45.0)
    assert set(bench.fixed_at(0.12, 128, 2048)) == {"window_global"}  # BigBird's sparsest is 0.17
    assert set(bench.fixed_at(0.3, 128, 2048)) == {"window_global", "bigbird"}
    assert set(bench.fixed_at(0.25, 32, 256)) == {"window_global", "bigbird"}  # --tiny's default on its 8 blocks
    assert bench.step_times({}, 256, 2, rounds=3) == {}  # every kind left out: nothing to time
    with pytest.raises(ValueError, match="2 blocks .* leave no sparse bigbird layout"):
        bench.closest("bigbird", 0.25, 64, 128)  # IMDb's tiny config at its real block (--tiny takes 16)
    path = _write(tmp_path, {"block_size": 128, "kind": "band", "seq_len": 2048,
                             "layers": [[{"offsets": [0], "globals": [0, 1]}]] * 2})
    derived = {"pattern": "derived", "layout_file": path}
    assert bench.same_blocks(derived, config, 128, 2048, 2)
    assert not bench.same_blocks(derived, {"pattern": "window_global", "window": 1, "n_global": 1}, 128, 2048, 2)
    mass = np.zeros((2, 1, 16, 16))
    mass[:, :, :, 0] = 1.0  # every query on the first block
    assert bench.kept_mass_of(config, 128, np.tril(mass)) == pytest.approx(1.0)
    assert bench.run_name("derived", 0.18, 0.667) == "derived_0.18_x0.667"  # --budget-scale: its own run and file
    assert bench.run_name("bigbird", 0.18, 0.667) == "bigbird_0.18" == bench.run_name("bigbird", 0.18)
    assert bench.kernel_tiles_of(config, 128, 2048) == 48.0
    assert bench.kernel_tiles_of(derived, 128, 2048, 2) == 48.0
    wide = {"pattern": "window_global", "window": 2, "n_global": 3}
    assert bench.kernel_tiles_of(wide, 128, 2048) == 87.0 > bench.density_of(wide, 128, 2048)[1]  # rows padded
    # at 512 tokens (4 blocks) window 0 + 2 globals keeps 9 of 16 tiles; half the batches there
    assert bench.density_by_length(config, 128, {512: 0.5, 2048: 0.5}, 2) == pytest.approx(0.5 * 9 / 16 + 0.5 * 45 / 256)
    assert not bench.fitted_for(path, 2, 1, tiles=48)  # written without a kernel budget: fitted again
    payload = json.loads(open(path).read())
    payload["provenance"]["max_kernel_tiles"] = 48
    open(path, "w").write(json.dumps(payload))
    assert not bench.fitted_for(path, 2, 4, tiles=48)  # heads not shared by the fit of the time: fitted again
    payload["provenance"]["share_tolerance"] = D.SHARE_TOLERANCE
    open(path, "w").write(json.dumps(payload))
    assert bench.fitted_for(path, 2, 4, tiles=48) and not bench.fitted_for(path, 3, 4, tiles=48)
    rows = [dict(task="listops", layout=k, target_density=0.18, density=0.17, kept_blocks=45.0, teacher_mass_kept=m,
                 test_accuracy=a, step_ms=t, kernel_tiles=48.0)
            for k, m, a, t in (("derived", 0.9, 0.40, 1100.0), ("window_global", 0.6, 0.37, 1000.0),
                               ("bigbird", 0.5, 0.36, 1000.0))]
    text = bench.section({"rows": rows, "machine": {"cpu": "x"}, "meta": {}})
    assert "keeps 1.50x the teacher's attention mass of the best fixed layout (window_global)" in text
    rows[0]["mass_bound"] = 0.96
    text = bench.section({"rows": rows, "machine": {"cpu": "x"}, "meta": {}})
    assert "(window_global) (any layout of its kept blocks keeps at most 96.0%, 1.60x)" in text
    assert "+3.00 points" in text and "step time 1.10x (48 kernel tiles a head against 48)" in text
    rows += [dict(r, target_density=0.3, density=0.3) for r in rows]
    assert bench.plot(rows, str(tmp_path / "plot.png")) == "plot.png" and (tmp_path / "plot.png").stat().st_size
    # the derived student at 0.17 against fixed students at 1.5x that density or more (0.3): the other way to win
    (line,) = bench.sparser_lines([r for r in rows if r["layout"] == "derived" and r["density"] < 0.2]
                                  + [dict(r, test_accuracy=0.39) for r in rows if r["density"] == 0.3
                                     and r["layout"] != "derived"], "listops")
    assert "derived student at density 0.170, 40.00%" in line and "(window_global at 0.300; the derived density is 0.57x that)" in line
    assert "39.00% (+1.00 points)." in line  # no step time: another density's students are timed in another process
    (line,) = bench.sparser_lines([dict(rows[0], density=0.11)] + rows[1:3], "listops")
    assert "(+3.00 points); step time 1.10x." in line


def test_benchmark_refit_keeps_the_student_of_an_unchanged_layout_and_moves_aside_the_others(tmp_path):
    """An outdated layout file is fitted again beside it: the same layout keeps its student and row;
    another layout moves the student to a free `.superseded` name, drops its row, and replaces the
    file together with its mass array."""
    from pathlib import Path

    from benchmarks import derived_layouts as bench

    runs = tmp_path / "runs"
    layout = str(runs / "derived_0.3.json")
    spec = {"block_size": 16, "kind": "band", "seq_len": 64, "layers": [[{"offsets": [0], "globals": [0]}]]}
    os.makedirs(runs / "derived_0.3.superseded")  # an earlier student already set aside
    os.makedirs(runs / "derived_0.3_s2")  # a student of another seed (--seed 2) on the same layout
    _write(runs, spec, "derived_0.3.json")
    stale = ("listops", "derived", 0.3, 800, 1.0)
    key = lambda r: (r["task"], r["layout"], r["target_density"], r["steps"], 1.0)  # noqa: E731
    for new_layers, moved in ((spec["layers"], False), ([[{"offsets": [0, 1], "globals": [0]}]], True)):
        os.makedirs(runs / "derived_0.3", exist_ok=True)
        row = dict(task="listops", layout="derived", target_density=0.3, steps=800)
        old, rows = {stale: row}, [row]
        derive = lambda out, layers=new_layers: _write(  # noqa: E731
            Path(os.path.dirname(out)), {**spec, "layers": layers}, os.path.basename(out))
        bench.refit(layout, derive, stale=stale, old=old, rows=rows, key=key)
        assert json.loads(open(layout).read())["layers"] == new_layers
        assert os.path.isfile(layout + ".mass.npy")
        assert os.path.isdir(runs / "derived_0.3") != moved and os.path.isdir(runs / "derived_0.3.superseded1") == moved
        assert (rows, stale in old) == (([], False) if moved else ([row], True))
        assert os.path.isdir(runs / "derived_0.3_s2") != moved and os.path.isdir(runs / "derived_0.3_s2.superseded") == moved


def test_paired_difference_and_the_benchmarks_pairing(tmp_path):
    """Two students compared example by example: the interval of the paired difference, its
    verdict in the section's words, and students on another test sample left unpaired."""
    from benchmarks import derived_layouts as bench
    from memgpt_jax.training.metrics import paired_difference

    a = np.array([1, 1, 1, 0, 0, 1, 1, 0] * 250, bool)  # 2,000 examples
    b = a.copy()
    b[:80] = ~b[:80]  # b differs on 80: 30 it gets right that a missed, 50 the other way
    p = paired_difference(a, b)
    assert (p["a_only"], p["b_only"], p["examples"]) == (50, 30, 2000)
    assert p["difference"] == pytest.approx(20 / 2000)
    p10, p01 = 50.5 / 2002, 30.5 / 2002  # Agresti-Min: half an example added to each cell
    se = np.sqrt((p10 + p01 - (p10 - p01) ** 2) / 2002)
    assert (p["low"], p["high"]) == pytest.approx((p10 - p01 - 1.96 * se, p10 - p01 + 1.96 * se))
    d = (a.astype(float) - b.astype(float))  # at 2,000 examples: the plain Wald interval of the differences
    assert p["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(2000), rel=0.01)
    # pairing removes what both get right or wrong: far tighter than the unpaired interval
    unpaired = 1.96 * np.sqrt(a.mean() * (1 - a.mean()) / 2000 + b.mean() * (1 - b.mean()) / 2000)
    assert p["high"] - p["difference"] < unpaired / 3
    assert paired_difference(a, a)["low"] == pytest.approx(-paired_difference(a, a)["high"])  # centred on 0
    few = paired_difference([1, 1], [0, 0])  # two examples, both for A: no certainty, and within [-1, 1]
    assert few["difference"] == 1.0 and few["low"] < 0 and few["high"] == 1.0
    with pytest.raises(ValueError, match="correct flags"):
        paired_difference([3, 0, 2, 1], [3, 1, 2, 0])  # predictions, not whether they are right
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_difference(a, a[:-1])

    labels = np.arange(2000) % 2
    runs = tmp_path / "runs"

    def student(name, correct, labels=labels):
        os.makedirs(runs / name)
        np.savez(runs / name / bench.PREDICTIONS, predictions=np.where(correct, labels, 1 - labels), labels=labels)

    student("derived_0.18", a)
    student("window_global_0.18", b)
    student("bigbird_0.18", a, labels=labels[::-1])  # another test sample: not comparable
    rows = [dict(task="text", layout=k, target_density=0.18, density=0.17, kept_blocks=44.0, teacher_mass_kept=0.8,
                 test_accuracy=acc) for k, acc in (("derived", a.mean()), ("window_global", b.mean()),
                                                   ("bigbird", 0.5))]
    paired = bench.paired_with_fixed(rows[0], rows, str(runs))
    assert list(paired) == ["window_global 0.18"]
    assert paired["window_global 0.18"] == [round(v, 4) for v in (p["difference"], p["low"], p["high"])]
    rows[0]["paired"] = paired
    rows[2]["test_accuracy"] = 0.1  # window + global is the best fixed student
    text = bench.section({"rows": rows, "machine": {"cpu": "x"}, "meta": {}})
    assert f"(window_global, +1.00 points, 95% interval +{100 * p['low']:.1f} to +{100 * p['high']:.1f}" in text
    assert ": better)" in text
    # a same_as row is paired through its twin's run; a row without predictions is not paired
    twin = dict(rows[0], same_as="window_global", budget_scale=0.65)
    assert bench.paired_with_fixed(twin, rows, str(runs))["window_global 0.18"][0] == 0.0
    assert bench.paired_with_fixed(dict(rows[0], target_density=0.3), rows, str(runs)) == {}
    from benchmarks.report import _derived_quality_figure

    what, ours, peer, _ = _derived_quality_figure("text", sparser=False)({"rows": rows})
    assert "density 0.170" in what and "+1.00 points, 95% interval" in what and ours == "62.50%"
    assert peer == "best fixed student at equal density (window_global, density 0.170): 61.50%"
    assert _derived_quality_figure("text", sparser=True)({"rows": rows}) is None  # no fixed student 1.5x as dense
    sparse = dict(rows[0], density=0.11, budget_scale=0.65)  # a --budget-scale student
    what, *_ = _derived_quality_figure("text", sparser=True)({"rows": rows + [sparse]})
    assert what.startswith("Derived layout, text, density 0.110")
    # a --budget-scale run times the equal-density students it did not train too, not a twin's or
    # another density's or an untrained one's
    for name in ("derived_0.18", "derived_0.18_x0.65", "derived_0.18_x0.5", "bigbird_0.3"):
        os.makedirs(runs / name, exist_ok=True)
        (runs / name / "summary.json").write_text("{}")
    others = [dict(rows[0], layout="bigbird", target_density=0.3), dict(rows[0], budget_scale=0.65),
              dict(rows[0], budget_scale=0.5, same_as="window_global"), dict(rows[0], budget_scale=0.4)]
    assert bench.also_timed(rows + others, "text", [0.18], str(runs), {"derived_0.18_x0.65": None}) == {
        "derived_0.18": str(runs / "derived_0.18")}
    # another training seed (--seed 1): its own run directories, paired with the fixed students of its seed only,
    # a line of its own in the section, not timed again, and left out of the headline
    assert bench.run_name("derived", 0.18, 0.65, seed=1) == "derived_0.18_x0.65_s1"
    student("derived_0.18_s1", b)
    student("bigbird_0.18_s1", a)
    seed1 = [dict(rows[0], seed=1, test_accuracy=b.mean()), dict(rows[2], seed=1, test_accuracy=a.mean())]
    assert list(bench.paired_with_fixed(seed1[0], rows + seed1, str(runs))) == ["bigbird 0.18"]
    seed1[0]["paired"] = bench.paired_with_fixed(seed1[0], rows + seed1, str(runs))
    (line,) = bench.seed_lines(rows + seed1, "text")
    assert line.startswith("- text at density ~0.18, seed 1: derived student 61.50% vs 62.50% (bigbird, -1.00 points")
    assert ": worse)" in line
    assert "seed 1" not in bench.section({"rows": rows, "machine": {"cpu": "x"}, "meta": {}})
    assert "seed 1: derived student" in bench.section({"rows": rows + seed1, "machine": {"cpu": "x"}, "meta": {}})
    assert _derived_quality_figure("text", sparser=False)({"rows": seed1 + rows})[1] == "62.50%"  # seed 0's
    (runs / "derived_0.18_s1" / "summary.json").write_text("{}")
    assert "derived_0.18_s1" not in bench.also_timed(seed1, "text", [0.18], str(runs), {})
    close = dict(rows[0], paired={"window_global 0.18": [0.002, -0.008, 0.012]})
    assert "no difference shown; within 1 point at worst" in bench.paired_text(close, rows[1])
    wide = dict(rows[0], paired={"window_global 0.18": [0.002, -0.02, 0.024]})
    assert bench.paired_text(wide, rows[1]).endswith(": no difference shown")
