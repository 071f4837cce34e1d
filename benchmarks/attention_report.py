"""Reports of benchmarks/attention.py: JSON, Markdown tables, a PNG plot, the RESULTS.md section."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from benchmarks.common import RESULTS_DIR, machine, rebuild_results_md

HEADLINE_LAYOUT = "window_global"
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


def _dtypes(records) -> list[str]:
    return [d for d in ("float32", "bfloat16") if any(r.get("dtype") == d for r in records)]


def best(records, **kw):
    """The fastest timed record matching ``kw`` over the dtypes (a peer at its best)."""
    timed = [r for r in records if "median_s" in r and all(r.get(k) == v for k, v in kw.items())]
    return min(timed, key=lambda r: r["median_s"]) if timed else None


def round_ratios(records, peer: dict, ours: dict) -> list[float]:
    """Per interleaved round: the peer's best dtype over ours' best dtype, each round on its own
    (the spread of a best-against-best ratio; the rounds ran side by side in one process)."""
    def per_round(kw):
        timed = [r["round_medians"] for r in records if r.get("round_medians") and "median_s" in r
                 and all(r.get(k) == v for k, v in kw.items())]
        return [min(t[i] for t in timed) for i in range(min(map(len, timed)))] if timed else []
    a, b = per_round(peer), per_round(ours)
    return [x / y for x, y in zip(a, b)]


def _spread(ratios: list[float]) -> str:
    return f" (rounds {min(ratios):.2f}-{max(ratios):.2f}x, {len(ratios)} rounds)" if len(ratios) > 1 else ""


def _short(dtype: str) -> str:
    return {"float32": "f32", "bfloat16": "bf16"}.get(dtype, dtype)


def _at(rec) -> str:
    """``12.3 (bf16)``: a best record's time and dtype."""
    return "-" if rec is None else f"{_ms(rec)} ({_short(rec['dtype'])})"


def ceiling(records, rec):
    """The one-product ceiling of ``rec``'s layout, length, mode and dtype: the seconds of the same
    kept-block FLOPs as one square product (the ``gemm`` row scaled from its rounded size)."""
    if rec is None:
        return None
    g = _find(records, impl="gemm", mode=rec["mode"], layout=rec["layout"], length=rec["length"], dtype=rec["dtype"])
    if g is None or "median_s" not in g:
        return None
    return g["median_s"] * kept_gflop(rec) * 1e9 / (2 * g["gemm_n"] ** 3)


def headline_table(records) -> str:
    """Peers at their best, window+global: our best dtype against each peer's best, the same-dtype
    ratios beside, and the one-product ceiling."""
    dts = _dtypes(records)
    head = ["T", "kept blocks (density)"]
    head += [f"ours fwd {_short(d)} ms" for d in dts] + [f"Flex fwd {_short(d)} ms" for d in dts]
    head += [f"SDPA causal fwd {_short(d)} ms" for d in dts]
    head += ["best / best: Flex / ours fwd", "SDPA / ours fwd"] + [f"Flex / ours {_short(d)}" for d in dts]
    head += ["ours fwd / ceiling", "ours fwd+bwd best ms", "SDPA fwd+bwd best ms", "SDPA / ours fwd+bwd"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for length in sorted({r["length"] for r in records}):
        sel = dict(length=length, layout=HEADLINE_LAYOUT)
        ours_f, ours_b = best(records, impl="xla", mode="fwd", **sel), best(records, impl="xla", mode="fwdbwd", **sel)
        if ours_f is None:
            continue
        flex_f = best(records, impl="flex", mode="fwd", **sel)
        sdpa_f = best(records, impl="sdpa", mode="fwd", length=length)
        sdpa_b = best(records, impl="sdpa", mode="fwdbwd", length=length)
        cells = [str(length), f"{ours_f['kept_blocks']:.0f} ({ours_f['density']:.3f})"]
        cells += [_ms(_find(records, impl="xla", mode="fwd", dtype=d, **sel)) for d in dts]
        cells += [_ms(_find(records, impl="flex", mode="fwd", dtype=d, **sel)) for d in dts]
        cells += [_ms(_find(records, impl="sdpa", mode="fwd", dtype=d, length=length)) for d in dts]
        cells += [f"{_fmt(_ratio(flex_f, ours_f))}x", f"{_fmt(_ratio(sdpa_f, ours_f))}x"]
        same = [(_find(records, impl="flex", mode="fwd", dtype=d, **sel),
                 _find(records, impl="xla", mode="fwd", dtype=d, **sel)) for d in dts]
        cells += [f"{_fmt(_ratio(flex, ours))}x" for flex, ours in same]
        c = ceiling(records, ours_f)
        cells += [_fmt(c and c / ours_f["median_s"], "{:.0%}"), _at(ours_b), _at(sdpa_b),
                  f"{_fmt(_ratio(sdpa_b, ours_b))}x"]
        rows.append("| " + " | ".join(cells) + " |")
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
            f"{_mb(get('xla', 'fwd', layout=HEADLINE_LAYOUT))} / {_mb(get('flex', 'fwd', layout=HEADLINE_LAYOUT))} |")
    return "\n".join(rows)


def efficiency_table(records, peaks: dict) -> str:
    """GFLOP/s on the kept blocks against the bf16 matmul peak and against the layout's one-product ceiling."""
    bf16 = peaks.get("bfloat16")
    rows = ["| layout | T | dtype | kept GFLOP fwd | ours fwd GFLOP/s | of bf16 peak | of ceiling | "
            "ours fwd+bwd GFLOP/s | of bf16 peak | of ceiling | Flex fwd GFLOP/s |", "|" + "---|" * 11]
    for layout in sorted({r["layout"] for r in records if r["impl"] == "xla"}):
        for length in sorted({r["length"] for r in records}):
            for dt in _dtypes(records):
                sel = dict(length=length, dtype=dt, layout=layout)
                xf, xb = _find(records, impl="xla", mode="fwd", **sel), _find(records, impl="xla", mode="fwdbwd", **sel)
                if xf is None:
                    continue
                cells = [layout, str(length), _short(dt), f"{kept_gflop(xf):.2f}"]
                for rec in (xf, xb):
                    rate, share = achieved(rec, bf16)
                    c = ceiling(records, rec)
                    cells += [_fmt(rate, "{:.1f}"), _fmt(share, "{:.0%}"),
                              _fmt(c and rec and "median_s" in rec and c / rec["median_s"], "{:.0%}")]
                cells.append(_fmt(achieved(_find(records, impl="flex", mode="fwd", **sel), None)[0], "{:.1f}"))
                rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def peaks_line(payload) -> str:
    """The matmul peaks measured in the run, per library and dtype."""
    jx, th = _peak(payload), (payload.get("torch") or {}).get("matmul_peak_gflops") or {}
    parts = [f"JAX {_short(d)} {v:,.0f}" for d, v in jx.items()]
    parts += [f"PyTorch {_short(d)} {v:,.0f}" for d, v in th.items()]
    return "matmul peak (best square product, GFLOP/s): " + (", ".join(parts) or "not measured")


def targets(records, peaks: dict) -> str:
    """Issue 44's targets for ours xla on window+global, checked against this run (peers at their best)."""
    lines = []
    bf16 = peaks.get("bfloat16")
    for length in (8192, 16384):
        sel = dict(length=length, layout=HEADLINE_LAYOUT)
        xf, xb = best(records, impl="xla", mode="fwd", **sel), best(records, impl="xla", mode="fwdbwd", **sel)
        if xf is None:
            continue
        fl, sd = best(records, impl="flex", mode="fwd", **sel), best(records, impl="sdpa", mode="fwd", length=length)
        if fl is not None:
            r = _ratio(fl, xf)
            spread = _spread(round_ratios(records, dict(impl="flex", mode="fwd", **sel),
                                          dict(impl="xla", mode="fwd", **sel)))
            lines.append(f"- {length}: ours fwd {_at(xf)} ms vs FlexAttention at its best {_at(fl)} ms: {r:.2f}x"
                         f"{spread} [target: >= 1.5x]")
        if sd is not None:
            r = _ratio(sd, xf)
            spread = _spread(round_ratios(records, dict(impl="sdpa", mode="fwd", length=length),
                                          dict(impl="xla", mode="fwd", **sel)))
            lines.append(f"- {length}: ours fwd vs dense causal SDPA at its best {_at(sd)} ms: {r:.2f}x{spread} "
                         "[target: >= 5x]")
        for mode, rec in (("fwd", xf), ("fwd+bwd", xb)):
            rate, share = achieved(rec, bf16)
            if share is not None:
                lines.append(f"- {length}: ours {mode} ({_short(rec['dtype'])}) {rate:.0f} GFLOP/s on the kept blocks, "
                             f"{share:.0%} of the measured bf16 matmul peak ({bf16:,.0f} GFLOP/s) [target: >= 30%]")
        for dt in _dtypes(records):
            rec = _find(records, impl="xla", mode="fwd", dtype=dt, **sel)
            c = ceiling(records, rec)
            if c is not None and "median_s" in rec:
                lines.append(f"- {length}: ours fwd {_short(dt)} {_ms(rec)} ms, the one-product ceiling "
                             f"{1e3 * c:.1f} ms: {c / rec['median_s']:.0%} of it [target: >= 50%]")
    return "\n".join(lines)


def machine_line(payload) -> str:
    m, t = payload["machine"], payload.get("torch") or {}
    return (f"{m.get('cpu', '?')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB RAM; JAX {m.get('jax')} "
            f"({m.get('backend')}), PyTorch {t.get('torch', 'n/a')} ({t.get('threads', '?')} threads); "
            f"Python {m.get('python')}; commit {m.get('commit')}; {m['date']}; 1-min load average before/after "
            f"{m['load_before'][0]:.1f}/{m.get('load_after', [0])[0]:.1f} (shared machine: compare the ratios "
            "measured side by side)")


def plot(payload, path: Path) -> None:
    import matplotlib  # lazy: only the plot needs it; the report renders tables without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use("Agg"): no display backend

    records = [r for r in payload["records"] if "median_s" in r]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    series = [("xla", HEADLINE_LAYOUT, "ours xla (window+global)"), ("pallas", HEADLINE_LAYOUT, "ours pallas"),
              ("gemm", HEADLINE_LAYOUT, "one-product ceiling"), ("dense", HEADLINE_LAYOUT, "dense masked XLA"),
              ("jax_causal", HEADLINE_LAYOUT, "jax.nn causal"), ("sdpa", "causal", "PyTorch SDPA causal"),
              ("flex", HEADLINE_LAYOUT, "FlexAttention (window+global)")]
    styles = {"bfloat16": "-", "float32": ":"}
    for ax, mode, title in ((axes[0], "fwd", "forward"), (axes[1], "fwdbwd", "forward + backward")):
        for i, (impl, layout, label) in enumerate(series):
            for dt in _dtypes(records):
                pts = sorted((r["length"], r["median_s"]) for r in records if r["impl"] == impl and r["mode"] == mode
                             and r["layout"] == layout and r["dtype"] == dt)
                if pts:
                    ax.plot(*zip(*pts), marker="o", linestyle=styles[dt], color=f"C{i}", label=f"{label} {_short(dt)}")
        ax.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="seconds (median)", title=title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for i, layout in enumerate(sorted({r["layout"] for r in records if r["impl"] == "xla"})):
        for dt in _dtypes(records):
            pts = sorted((r["length"], r["peak_rss_mb"]) for r in payload["records"]
                         if r["impl"] == "xla" and r["layout"] == layout and r["mode"] == "fwdbwd"
                         and r["dtype"] == dt and "peak_rss_mb" in r)
            if pts:
                axes[2].plot(*zip(*pts), marker="o", linestyle=styles[dt], color=f"C{i}",
                             label=f"ours xla {layout} {_short(dt)}")
    for impl, label in (("dense", "dense masked XLA"), ("sdpa", "PyTorch SDPA")):
        for dt in _dtypes(records):
            pts = sorted((r["length"], r["peak_rss_mb"]) for r in payload["records"]
                         if r["impl"] == impl and r["mode"] == "fwdbwd" and r["dtype"] == dt and "peak_rss_mb" in r)
            if pts:
                axes[2].plot(*zip(*pts), marker="s", linestyle="--", label=f"{label} {_short(dt)}")
    axes[2].set(xscale="log", yscale="log", xlabel="sequence length", ylabel="peak RSS MB (own process)",
                title="forward + backward peak memory")
    axes[2].grid(True, which="both", alpha=0.3)
    if axes[2].lines:
        axes[2].legend(fontsize=7)
    fig.suptitle("Block-sparse attention, batch 1, 4 heads, head_dim 64, block 128 (solid bf16, dotted f32)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def command(config: dict) -> str:
    """The command line that reproduces a run (non-default options only)."""
    parts = ["python -m benchmarks.attention"]
    if config.get("lengths") != [1024, 2048, 4096, 8192, 16384]:
        parts.append("--lengths " + " ".join(map(str, config["lengths"])))
    if config.get("layouts") and list(config["layouts"]) != ["causal", "window_global", "bigbird", "strided"]:
        parts.append("--layouts " + " ".join(config["layouts"]))
    if list(config.get("dtypes", [])) != ["float32", "bfloat16"]:
        parts.append("--dtypes " + " ".join(config.get("dtypes") or [config.get("dtype", "?")]))
    if config.get("rounds", 3) != 3:
        parts.append(f"--rounds {config['rounds']}")
    parts += [f"--{flag.replace('_', '-')}" for flag in ("no_memory", "no_torch") if config.get(flag)]
    if config.get("name", "attention") != "attention":
        parts.append(f"--name {config['name']}")
    return " ".join(parts)


def _method(payload) -> str:
    rounds = payload["config"].get("rounds", 1)
    return (f"Each time is the median over {rounds} rounds (ours and the PyTorch peers alternating) of "
            "per-round medians after warm-up." if rounds > 1 else "Each time is one round's median after warm-up.")


def section(payload, tag: str, title: str | None = None) -> str:
    """The RESULTS.md section of one attention results file."""
    records = payload["records"]
    return "\n".join([
        f"## {title or 'Attention: block-sparse vs dense'}", "", f"Machine: {machine_line(payload)}; "
        f"{peaks_line(payload)}.", "",
        f"Command: `{command(payload['config'])}`; full tables in "
        f"`benchmarks/results/{tag}.md`, plot `benchmarks/results/{tag}.png`. {_method(payload)}", "",
        f"![attention times]({'results/' + tag + '.png'})", "",
        "window+global layout = causal & (q - k < 384 | k < 128), batch 1, 4 heads, head_dim 64, block 128; "
        "every implementation in each dtype, the ratios best dtype against best dtype (same-dtype ratios beside); "
        "ceiling: the same kept-block FLOPs as one square product:", "",
        headline_table(records), "", "Targets (issue 44), from this run:", "", targets(records, _peak(payload))])


def _peak(payload) -> dict:
    """JAX's matmul peak per dtype (GFLOP/s), measured in the same run."""
    peak = payload.get("machine", {}).get("matmul_peak_gflops") or {}
    if not isinstance(peak, dict):  # runs before issue 44 measured the run's one dtype
        peak = {payload["config"].get("dtype", "float32"): peak}
    return peak


def write_reports(payload, out_dir: Path, tag: str) -> None:
    records = payload["records"]
    method = _method(payload)
    (out_dir / f"{tag}.json").write_text(json.dumps(payload, indent=1, default=str))
    md = [f"# Attention benchmark ({', '.join(_dtypes(records))})", "", machine_line(payload), "", peaks_line(payload),
          "", f"Command: `{command(payload['config'])}`. {method}", "",
          "## window+global = causal & (q - k < 384 | k < 128): peers at their best", "", headline_table(records), "",
          "Targets (issue 44):", "", targets(records, _peak(payload)), "",
          "## Toward the matmul limit: GFLOP/s on the kept blocks", "",
          efficiency_table(records, _peak(payload)), "",
          "Of bf16 peak: the share of the best square bf16 product measured by JAX in the same run. Of ceiling: the "
          "time of the same kept-block FLOPs as one square product (same dtype, f32 accumulation) over ours. Kept "
          "FLOPs: QK^T and PV forward, dV/dP/dQ/dK backward, over every kept block (the backward's recomputed scores "
          "not counted)."]
    for dt in _dtypes(records):
        md += ["", f"## All layouts ({dt})", "", layouts_table(records, dt), "", f"## Baselines ({dt})", "",
               baselines_table(records, dt)]
    md += ["", "Times are medians after warm-up; 'of ideal' = (dense masked time / ours) / (dense blocks / kept "
           "blocks). Peak MB is the peak RSS of a process running only that configuration (JAX or PyTorch runtime "
           "included). Dense masked XLA computes the full score matrix whatever the mask, so it is timed once per "
           "length."]
    (out_dir / f"{tag}.md").write_text("\n".join(md) + "\n")
    plot(payload, out_dir / f"{tag}.png")
    if not payload["config"].get("quick") and out_dir.resolve() == RESULTS_DIR.resolve():
        rebuild_results_md()
