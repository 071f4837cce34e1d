"""Reports of benchmarks/attention.py: JSON, Markdown tables, a PNG plot, the RESULTS.md section."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from benchmarks.common import machine, rebuild_results_md

HEADLINE = "window_global"
HEADS, HEAD_DIM, BLOCK = 4, 64, 128  # the benchmark's shapes (benchmarks/attention.py imports them)


def kept_gflop(rec) -> float:
    """The matmul FLOPs of the kept blocks (diagonal tiles counted whole): per head and
    block, ``QK^T`` and ``PV`` forward (2 products of ``2 * BLOCK^2 * HEAD_DIM``), and
    ``dV, dP, dQ, dK`` backward; the backward's recomputed scores are not counted."""
    products = 2 if rec["mode"] == "fwd" else 6
    return products * 2 * BLOCK * BLOCK * HEAD_DIM * HEADS * rec["kept_blocks"] / 1e9


def achieved(rec, peak_gflops: float | None) -> tuple[float | None, float | None]:
    """``(GFLOP/s on the kept blocks, share of the matmul peak)`` of a timed record."""
    if rec is None or "median_s" not in rec or "kept_blocks" not in rec:
        return None, None
    rate = kept_gflop(rec) / rec["median_s"]
    return rate, (rate / peak_gflops if peak_gflops else None)


def machine_info() -> dict:
    """``benchmarks.common.machine()`` plus the date and the load average before the run."""
    info = machine()
    info.update(date=datetime.datetime.now().isoformat(timespec="minutes"), load_before=os.getloadavg())
    return info


def _find(records, **kw):
    for r in records:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def _ms(rec) -> str:
    if rec is None:
        return "-"
    if "skipped" in rec:
        return f"skipped ({rec['skipped']})"
    return f"{1000 * rec['median_s']:.1f}"


def _ratio(a, b) -> float | None:
    if a is None or b is None or "median_s" not in a or "median_s" not in b:
        return None
    return a["median_s"] / b["median_s"]


def _fmt(x, spec="{:.2f}", none="-") -> str:
    return none if x is None else spec.format(x)


def _mb(rec) -> str:
    return "-" if rec is None or "peak_rss_mb" not in rec else f"{rec['peak_rss_mb']:.0f}"


def headline_table(records, dtype: str) -> str:
    rows = ["| T | kept blocks (density) | ideal speedup | ours xla fwd ms | dense masked fwd ms | "
            "speedup fwd (of ideal) | ours xla fwd+bwd ms | dense fwd+bwd ms | speedup fwd+bwd (of ideal) | "
            "Flex fwd ms | Flex / ours fwd | SDPA causal fwd+bwd ms | SDPA / ours fwd+bwd | peak MB ours fwd+bwd |",
            "|" + "---|" * 14]
    for length in sorted({r["length"] for r in records}):
        sel = dict(length=length, dtype=dtype)
        xf = _find(records, impl="xla", mode="fwd", layout=HEADLINE, **sel)
        xb = _find(records, impl="xla", mode="fwdbwd", layout=HEADLINE, **sel)
        if xf is None:
            continue
        df = _find(records, impl="dense", mode="fwd", **sel)
        db = _find(records, impl="dense", mode="fwdbwd", **sel)
        fl = _find(records, impl="flex", mode="fwd", layout=HEADLINE, **sel)
        sb = _find(records, impl="sdpa", mode="fwdbwd", **sel)
        ideal = xf["ideal_speedup"]
        sp_f, sp_b = _ratio(df, xf), _ratio(db, xb)
        rows.append(
            f"| {length} | {xf['kept_blocks']:.0f} ({xf['density']:.3f}) | {ideal:.1f} | {_ms(xf)} | {_ms(df)} | "
            f"{_fmt(sp_f)} ({_fmt(sp_f and sp_f / ideal, '{:.0%}')}) | {_ms(xb)} | {_ms(db)} | "
            f"{_fmt(sp_b)} ({_fmt(sp_b and sp_b / ideal, '{:.0%}')}) | {_ms(fl)} | {_fmt(_ratio(fl, xf))} | "
            f"{_ms(sb)} | {_fmt(_ratio(sb, xb))} | {_mb(xb)} |")
    return "\n".join(rows)


def layouts_table(records, dtype: str) -> str:
    rows = ["| layout | T | density | ideal | ours xla fwd ms | ours fwd+bwd ms | Flex fwd ms | "
            "of ideal vs dense (fwd / fwd+bwd) | compile s (fwd / fwd+bwd) | peak MB fwd+bwd |", "|" + "---|" * 10]
    impls = sorted({r["impl"] for r in records if r["impl"] in ("xla", "pallas")})
    for impl in impls:
        for layout in sorted({r["layout"] for r in records if r["impl"] == impl}):
            for length in sorted({r["length"] for r in records}):
                sel = dict(length=length, dtype=dtype)
                xf = _find(records, impl=impl, mode="fwd", layout=layout, **sel)
                xb = _find(records, impl=impl, mode="fwdbwd", layout=layout, **sel)
                if xf is None:
                    continue
                df = _find(records, impl="dense", mode="fwd", **sel)
                db = _find(records, impl="dense", mode="fwdbwd", **sel)
                fl = _find(records, impl="flex", mode="fwd", layout=layout, **sel)
                ideal = xf["ideal_speedup"]
                frac = [_fmt(r and r / ideal, "{:.0%}") for r in (_ratio(df, xf), _ratio(db, xb))]
                name = layout if impl == "xla" else f"{layout} ({impl})"
                rows.append(
                    f"| {name} | {length} | {xf['density']:.3f} | {ideal:.1f} | {_ms(xf)} | {_ms(xb)} | {_ms(fl)} | "
                    f"{frac[0]} / {frac[1]} | {xf['compile_s']:.1f} / {xb['compile_s'] if xb else float('nan'):.1f} | "
                    f"{_mb(xb)} |")
    return "\n".join(rows)


def baselines_table(records, dtype: str) -> str:
    rows = ["| T | dense masked fwd / fwd+bwd ms | jax.nn causal fwd / fwd+bwd ms | SDPA causal fwd / fwd+bwd ms | "
            "peak MB dense / jax.nn / SDPA (fwd+bwd) | peak MB ours / Flex (fwd) |", "|" + "---|" * 6]
    for length in sorted({r["length"] for r in records}):
        sel = dict(length=length, dtype=dtype)
        get = lambda impl, mode, **kw: _find(records, impl=impl, mode=mode, **sel, **kw)  # noqa: E731
        rows.append(
            f"| {length} | {_ms(get('dense', 'fwd'))} / {_ms(get('dense', 'fwdbwd'))} | "
            f"{_ms(get('jax_causal', 'fwd'))} / {_ms(get('jax_causal', 'fwdbwd'))} | "
            f"{_ms(get('sdpa', 'fwd'))} / {_ms(get('sdpa', 'fwdbwd'))} | "
            f"{_mb(get('dense', 'fwdbwd'))} / {_mb(get('jax_causal', 'fwdbwd'))} / {_mb(get('sdpa', 'fwdbwd'))} | "
            f"{_mb(get('xla', 'fwd', layout=HEADLINE))} / {_mb(get('flex', 'fwd', layout=HEADLINE))} |")
    return "\n".join(rows)


def efficiency_table(records, dtype: str, peak_gflops: float | None) -> str:
    """GFLOP/s on the kept blocks and the share of the measured matmul peak (issue 20)."""
    rows = ["| layout | T | kept GFLOP fwd | ours fwd GFLOP/s (of peak) | ours fwd+bwd GFLOP/s (of peak) | "
            "Flex fwd GFLOP/s (of peak) |", "|" + "---|" * 6]
    for layout in sorted({r["layout"] for r in records if r["impl"] == "xla"}):
        for length in sorted({r["length"] for r in records}):
            sel = dict(length=length, dtype=dtype, layout=layout)
            xf, xb = _find(records, impl="xla", mode="fwd", **sel), _find(records, impl="xla", mode="fwdbwd", **sel)
            if xf is None:
                continue
            cells = []
            for rec in (xf, xb, _find(records, impl="flex", mode="fwd", **sel)):
                rate, share = achieved(rec, peak_gflops)
                cells.append(f"{_fmt(rate, '{:.1f}')} ({_fmt(share, '{:.0%}')})")
            rows.append(f"| {layout} | {length} | {kept_gflop(xf):.2f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def targets(records, dtype: str, peak_gflops: float | None = None) -> str:
    """The issue's targets for ours xla on window+global, checked against this run."""
    get = lambda impl, mode, length, **kw: _find(records, impl=impl, mode=mode, length=length, dtype=dtype, **kw)  # noqa: E731
    lines = []
    for length in (8192, 16384):
        xf, xb = get("xla", "fwd", length, layout=HEADLINE), get("xla", "fwdbwd", length, layout=HEADLINE)
        fl, sb = get("flex", "fwd", length, layout=HEADLINE), get("sdpa", "fwdbwd", length)
        r_flex, r_sdpa = _ratio(fl, xf), _ratio(sb, xb)
        if r_flex is not None:
            lines.append(f"- {length}: ours fwd {_ms(xf)} ms vs FlexAttention {_ms(fl)} ms: "
                         f"{'faster' if r_flex > 1 else 'slower'} ({r_flex:.2f}x) [target: >= 1.5x]")
        for mode, rec in (("fwd", xf), ("fwd+bwd", xb)):
            rate, share = achieved(rec, peak_gflops)
            if share is not None:
                lines.append(f"- {length}: ours {mode} {rate:.0f} GFLOP/s on the kept blocks, {share:.0%} of the "
                             f"measured {dtype} matmul peak ({peak_gflops:.0f} GFLOP/s) [target: >= 30%]")
        if r_sdpa is not None:
            lines.append(f"- {length}: ours fwd+bwd {_ms(xb)} ms vs SDPA causal fwd+bwd {_ms(sb)} ms: "
                         f"{r_sdpa:.1f}x faster [target: >= 4x]")
    for length in sorted({r["length"] for r in records if r["length"] >= 4096}):
        xf, xb = get("xla", "fwd", length, layout=HEADLINE), get("xla", "fwdbwd", length, layout=HEADLINE)
        df, db = get("dense", "fwd", length), get("dense", "fwdbwd", length)
        if xf is None:
            continue
        parts = [f"{mode} {_fmt(r and r / xf['ideal_speedup'], '{:.0%}', 'n/a (dense skipped)')}"
                 for mode, r in (("fwd", _ratio(df, xf)), ("fwd+bwd", _ratio(db, xb)))]
        lines.append(f"- {length}: fraction of the ideal speedup over dense masked XLA: {', '.join(parts)} "
                     "[target: >= 60%]")
    xb = get("xla", "fwdbwd", 16384, layout=HEADLINE)
    if xb is not None and "peak_rss_mb" in xb:
        lines.append(f"- 16384: ours fwd+bwd peak RSS {xb['peak_rss_mb']:.0f} MB (process total, runtime included) "
                     "[target: < 1500 MB]")
    return "\n".join(lines)


def machine_line(payload) -> str:
    m, t = payload["machine"], payload.get("torch") or {}
    return (f"{m.get('cpu', '?')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB RAM; JAX {m.get('jax')} "
            f"({m.get('backend')}), PyTorch {t.get('torch', 'n/a')} ({t.get('threads', '?')} threads); "
            f"Python {m.get('python')}; commit {m.get('commit')}; {m['date']}; 1-min load average before/after "
            f"{m['load_before'][0]:.1f}/{m.get('load_after', [0])[0]:.1f} (shared machine: compare the ratios "
            "measured side by side)")


def plot(payload, path: Path, dtype: str) -> None:
    import matplotlib  # lazy: only the plot needs it; the report renders tables without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use("Agg"): no display backend

    records = [r for r in payload["records"] if "median_s" in r and r["dtype"] == dtype]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    series = [("xla", HEADLINE, "ours xla (window+global)"), ("pallas", HEADLINE, "ours pallas (window+global)"),
              ("dense", HEADLINE, "dense masked XLA"), ("jax_causal", HEADLINE, "jax.nn causal"),
              ("sdpa", "causal", "PyTorch SDPA causal"), ("flex", HEADLINE, "FlexAttention (window+global)")]
    for ax, mode, title in ((axes[0], "fwd", "forward"), (axes[1], "fwdbwd", "forward + backward")):
        for impl, layout, label in series:
            pts = sorted((r["length"], r["median_s"]) for r in records
                         if r["impl"] == impl and r["mode"] == mode and r["layout"] == layout)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label)
        ax.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="seconds (median)", title=title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for layout in sorted({r["layout"] for r in records if r["impl"] == "xla"}):
        pts = sorted((r["length"], r["peak_rss_mb"]) for r in payload["records"] if r["impl"] == "xla"
                     and r["layout"] == layout and r["mode"] == "fwdbwd" and "peak_rss_mb" in r)
        if pts:
            axes[2].plot(*zip(*pts), marker="o", label=f"ours xla {layout}")
    for impl, label in (("dense", "dense masked XLA"), ("sdpa", "PyTorch SDPA")):
        pts = sorted((r["length"], r["peak_rss_mb"]) for r in payload["records"]
                     if r["impl"] == impl and r["mode"] == "fwdbwd" and "peak_rss_mb" in r)
        if pts:
            axes[2].plot(*zip(*pts), marker="s", linestyle="--", label=label)
    axes[2].set(xscale="log", yscale="log", xlabel="sequence length", ylabel="peak RSS MB (own process)",
                title="forward + backward peak memory")
    axes[2].grid(True, which="both", alpha=0.3)
    if axes[2].lines:
        axes[2].legend(fontsize=8)
    fig.suptitle(f"Block-sparse attention, batch 1, 4 heads, head_dim 64, block 128, {dtype}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def command(config: dict) -> str:
    """The command line that reproduces a run (non-default options only)."""
    parts = ["python -m benchmarks.attention", f"--dtype {config['dtype']}"]
    if config.get("lengths") != [1024, 2048, 4096, 8192, 16384]:
        parts.append("--lengths " + " ".join(map(str, config["lengths"])))
    if config.get("layouts") and list(config["layouts"]) != ["causal", "window_global", "bigbird", "strided"]:
        parts.append("--layouts " + " ".join(config["layouts"]))
    if config.get("rounds", 3) != 3:
        parts.append(f"--rounds {config['rounds']}")
    parts += [f"--{flag.replace('_', '-')}" for flag in ("no_memory", "no_torch") if config.get(flag)]
    return " ".join(parts)


def _method(payload) -> str:
    rounds = payload["config"].get("rounds", 1)
    return (f"Each time is the median over {rounds} rounds (ours and the PyTorch peers alternating) of "
            "per-round medians after warm-up." if rounds > 1 else "Each time is one round's median after warm-up.")


def section(payload, tag: str, title: str | None = None) -> str:
    """The RESULTS.md section of one attention results file."""
    dtype, records = payload["config"]["dtype"], payload["records"]
    return "\n".join([
        f"## {title or f'Attention: block-sparse vs dense ({dtype})'}", "", f"Machine: {machine_line(payload)}.", "",
        f"Command: `{command(payload['config'])}`; full tables in "
        f"`benchmarks/results/{tag}.md`, plot `benchmarks/results/{tag}.png`. {_method(payload)}", "",
        f"![attention times]({'results/' + tag + '.png'})", "",
        "window+global layout = causal & (q - k < 384 | k < 128), batch 1, 4 heads, head_dim 64, block 128:", "",
        headline_table(records, dtype), "", "Targets (issues 3 and 20), from this run:", "",
        targets(records, dtype, _peak(payload))])


def _peak(payload) -> float | None:
    """The machine's matmul peak in the run's dtype (GFLOP/s), measured in the same run."""
    return payload.get("machine", {}).get("matmul_peak_gflops")


def write_reports(payload, out_dir: Path, tag: str) -> None:
    dtype = payload["config"]["dtype"]
    records = payload["records"]
    method = _method(payload)
    (out_dir / f"{tag}.json").write_text(json.dumps(payload, indent=1, default=str))
    md = [f"# Attention benchmark ({dtype})", "", machine_line(payload), "",
          f"Command: `{command(payload['config'])}`. {method}", "",
          "## window+global = causal & (q - k < 384 | k < 128)", "", headline_table(records, dtype), "",
          "Targets (issues 3 and 20):", "", targets(records, dtype, _peak(payload)), "",
          "## All layouts", "", layouts_table(records, dtype), "",
          "## Toward the matmul limit: GFLOP/s on the kept blocks", "",
          efficiency_table(records, dtype, _peak(payload)), "",
          f"Of peak: the share of the {dtype} matmul peak measured in the same run (a 1024^3 product, "
          f"`memgpt_jax.flops.measured_peak_flops`: {_fmt(_peak(payload), '{:.0f}')} GFLOP/s). Kept FLOPs: QK^T and "
          "PV forward, dV/dP/dQ/dK backward, over every kept block (the backward's recomputed scores not counted).",
          "", "## Baselines", "", baselines_table(records, dtype),
          "", "Times are medians after warm-up; 'of ideal' = (dense masked time / ours) / (dense blocks / kept blocks). "
          "Peak MB is the peak RSS of a process running only that configuration (JAX or PyTorch runtime included). "
          "Dense masked XLA computes the full score matrix whatever the mask, so it is timed once per length."]
    (out_dir / f"{tag}.md").write_text("\n".join(md) + "\n")
    plot(payload, out_dir / f"{tag}.png", dtype)
    if not payload["config"].get("quick"):
        rebuild_results_md()
