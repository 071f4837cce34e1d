"""Shared benchmark plumbing: timing, machine description, result files.

A measurement warms up (compiles), calls ``block_until_ready``, and reports the
median of several runs; compile time is reported separately.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

# Where results JSON (and, one level up, RESULTS.md) go; MEMGPT_BENCH_RESULTS redirects them
# (quick runs and tests write elsewhere, leaving the committed figures alone).
RESULTS_DIR = Path(os.environ.get("MEMGPT_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
# Where the diagnostics of ``benchmarks/studies`` write: next to the results, never rendered in RESULTS.md.
STUDIES_DIR = RESULTS_DIR / "studies"
REPO_ROOT = Path(__file__).resolve().parent.parent


def time_fn(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Times ``fn()`` (which must return JAX arrays): first call = compile + run."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"median_s": median, "min_s": min(times), "compile_s": max(first - median, 0.0), "repeats": repeats}


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, library versions, the commit and the date (UTC) of the run."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "date": time.strftime("%Y-%m-%dT%H:%M", time.gmtime())}
    from memgpt_jax import machine as cpu  # reads /proc/cpuinfo, no JAX

    info["cpu"] = cpu.cpu_model()
    info["cpu_matrix_features"] = [name for name, has in cpu.cpu_features().items() if has]
    info["cores"] = os.cpu_count()
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        info["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import jax

        info["jax"] = jax.__version__
        info["backend"] = jax.default_backend()
        info["devices"] = [str(d) for d in jax.devices()][:2]
    except ImportError:
        pass
    for mod in ("flax", "optax", "torch"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    info["commit"] = head_commit()
    return info


def head_commit() -> str:
    """The repository's short HEAD commit, or "unknown"."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_line(m: dict[str, Any]) -> str:
    """One line describing the machine block of a results JSON (for RESULTS.md)."""
    libs = ", ".join(f"{k} {m[k]}" for k in ("jax", "flax", "optax", "torch") if m.get(k))
    when = f"; {m['date']}" if m.get("date") else ""
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB; {libs}; "
            f"backend {m.get('backend', '?')}; commit {m.get('commit', '?')}{when}")


def rebuild_results_md() -> None:
    """Rebuilds RESULTS.md from every results JSON (``python -m benchmarks.report``).

    Run as a child process, not imported: ``benchmarks.report`` sits above the benchmark
    modules (it imports each one's ``section`` renderer), so they do not import it back."""
    subprocess.run([sys.executable, "-m", "benchmarks.report"], cwd=REPO_ROOT, check=True)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def invocation() -> str:
    """The command line that is running, as ``python -m benchmarks.<module> ...``."""
    argv = list(sys.argv)
    script = Path(argv[0]) if argv else Path("?")
    package = {"benchmarks": "benchmarks.", "studies": "benchmarks.studies."}.get(script.parent.name, "")
    module = package + script.stem
    return " ".join(["python -m " + module, *argv[1:]]).strip()


def committed_rows(path: Path, key: str | Callable[[dict[str, Any]], Any],
                   keep: Callable[[dict[str, Any], dict[str, Any]], bool]) -> dict[Any, dict[str, Any]]:
    """The rows of a committed results JSON that ``keep(row, meta)`` accepts, by ``row[key]``
    (or ``key(row)``).

    Each row keeps (or gains) ``source``: the commit of the run that measured it, so that a
    table can carry a row whose run is gone (a fresh machine) without measuring it again."""
    if not path.is_file():
        return {}
    payload = json.loads(path.read_text())
    meta, commit = payload.get("meta") or {}, (payload.get("machine") or {}).get("commit")
    out = {}
    for row in payload.get("rows", []):
        if keep(row, meta):
            source = row.get("source")
            out[key(row) if callable(key) else row[key]] = {
                **row, "source": f"commit {commit}" if source in (None, "this run") else source}
    return out


def write_results(name: str, rows: list[dict[str, Any]], columns: list[str], meta: dict[str, Any] | None = None,
                  directory: Path | None = None) -> Path:
    """Writes ``<directory>/<name>.json`` and ``.md`` (default ``RESULTS_DIR``); returns the JSON path."""
    directory = directory or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"name": name, "command": invocation(), "machine": machine(), "meta": meta or {},
               "columns": columns, "rows": rows}
    json_path = directory / f"{name}.json"
    json_path.write_text(json.dumps(payload, indent=2))
    m = payload["machine"]
    header = (f"Machine: {m.get('cpu', '?')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB; "
              f"jax {m.get('jax')} ({m.get('backend')}); commit {m.get('commit')}")
    (directory / f"{name}.md").write_text(f"{header}\n\n{markdown_table(rows, columns)}\n")
    return json_path
