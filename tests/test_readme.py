"""The README's and docs' commands, as a new user meets them.

Every command in the ``bash`` blocks of README.md and docs/*.md, in the config files'
docstrings and in the recipe scripts is checked against the code: a ``memgpt-jax`` command
must parse with the real argument parser (its subcommand, flags and choices), and its
``--config FILE:VARIANT`` with its ``--config.*`` overrides must load; a ``python -m
benchmarks...`` or ``memgpt-jax bench`` command must name a benchmark whose ``--help`` lists
every flag used. Then the blocks the README shows after the demo and for training are run,
command by command, on tiny runs; its model snippet runs; its links lead somewhere; and its
test line is the one CI runs.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^\s*```bash\n(.*?)^\s*```", text, flags=re.S | re.M)


def commands(block: str) -> list[list[str]]:
    """The commands of a shell snippet: continuation lines joined, comments dropped, split
    on ``&&``, ``|`` and ``;``, leading ``VAR=value`` assignments and ``.venv/bin/`` removed."""
    out = []
    text = block.replace("\\\n", " ")
    pending = ""
    for line in text.splitlines():
        try:
            words = shlex.split(pending + line, comments=True)
        except ValueError:  # a quoted string goes on over the next line
            pending += line + " "
            continue
        pending = ""
        current: list[str] = []
        for word in words + ["&&"]:
            if word in ("&&", "|", ";", "||"):
                while current and re.match(r"^[A-Z_]+=", current[0]):
                    current.pop(0)
                if current:
                    current[0] = current[0].replace(".venv/bin/", "")
                    out.append(current)
                current = []
            elif word.startswith("--command="):  # a command run remotely (gcloud ... --command="...")
                out += commands(word[len("--command="):])
            else:
                current.append(word)
    return out


def docstring_commands(path: str) -> list[list[str]]:
    """Indented ``memgpt-jax ...`` lines of a config file's docstring."""
    text = open(path).read()
    doc = re.match(r'\s*"""(.*?)"""', text, flags=re.S)
    lines = [line.strip() for line in (doc.group(1) if doc else "").replace("\\\\\n", " ").splitlines()]
    return [c for line in lines if line.startswith("memgpt-jax ") for c in commands(line)]


def script_commands(path: str) -> list[list[str]]:
    """``$CLI ...`` lines of a recipe script (``$CLI`` is ``memgpt-jax``)."""
    text = open(path).read().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.split("]", 1)[1] if line.startswith("[") and "||" in line else line
        line = line.split("||", 1)[-1].strip() if "||" in line else line.strip()
        if line.startswith("$CLI "):
            line = re.sub(r'"\$\{[A-Z_]+\[@\]\}"', "", line)  # optional arguments from an array (LM_STOP_AT)
            found += commands("memgpt-jax " + line[len("$CLI "):])
    return found


def help_commands() -> list[tuple[str, list[str]]]:
    """The example commands in every ``--help`` text: each parser's description and epilog
    (module docstrings included) and each option's help."""
    import argparse

    from memgpt_jax.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in dict.fromkeys(action.choices.values()):
                    yield from parsers(sub)

    found = []
    for parser in parsers(build_parser()):
        texts = [parser.description, parser.epilog] + [a.help for a in parser._actions]
        for text in filter(None, texts):
            for line in text.replace("\\\n", " ").splitlines():
                # a command starts at `memgpt-jax WORD` outside ``quotes``; it ends at a comment
                # after two spaces, e.g. "   (BLEU/chrF)", or at the end of the line
                match = re.search(r"(?<!`)memgpt-jax [a-z].*", line)
                if match:
                    example = re.split(r"\s{2,}\(", match.group(0))[0].rstrip(".")
                    found += [(f"{parser.prog} --help", c) for c in commands(example)]
    return found


def _all_commands() -> list[tuple[str, list[str]]]:
    found = [(os.path.relpath(path, ROOT), c) for path in DOCS for block in bash_blocks(open(path).read())
             for c in commands(block)]
    found += help_commands()
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
        found += [(os.path.relpath(path, ROOT), c) for c in docstring_commands(path)]
    for path in sorted(glob.glob(os.path.join(ROOT, "train", "*.sh"))):
        found += [(os.path.relpath(path, ROOT), c) for c in script_commands(path)]
    return found


ALL = _all_commands()
CLI = [(where, c) for where, c in ALL if c[0] == "memgpt-jax"]
# `memgpt-jax bench ARGS` is `python -m benchmarks ARGS`
BENCH = [(where, c if c[0] == "python" else ["python", "-m", "benchmarks"] + c[2:]) for where, c in ALL
         if (c[:2] == ["python", "-m"] and c[2].startswith("benchmarks")) or c[:2] == ["memgpt-jax", "bench"]]


def test_the_documents_hold_commands():
    """The extraction itself: a README without commands would pass every check below."""
    assert len(CLI) >= 40 and len(BENCH) >= 3, (len(CLI), len(BENCH))
    assert ["memgpt-jax", "demo"] in [c for _, c in CLI]
    for path in DOCS[1:]:  # every page's blocks are read, not only the README's
        assert any(where == os.path.relpath(path, ROOT) for where, _ in ALL) or "```bash" not in open(path).read()


def _substitute(word: str) -> str:
    """Shell variables of the documents, given values (a path is not opened by parsing)."""
    return re.sub(r"\$\{?([A-Z_]+)\}?", "/data", word)


def _stand_in_layout(spec: str, override: str, tmp_path) -> str:
    """A layout file that an earlier command of the document writes (`layout derive --out`) and
    that does not exist here: a derived layout of the config's shape stands in for it."""
    name, _, path = override.partition("=")
    if name != "--config.model.attention.layout_file" or os.path.exists(path):
        return override
    from memgpt_jax import run_config
    from memgpt_jax.attention import derived

    mc = run_config.load(spec).model
    b = mc.attention.block_size
    n = mc.max_len // b
    spec_ = {"block_size": b, "kind": "band", "seq_len": n * b, "layers": [[{"offsets": [0]}]] * mc.n_layers}
    stand_in = str(tmp_path / os.path.basename(path))
    derived.write_file(stand_in, spec_, np.ones((mc.n_layers, 1, n, n)), {})
    return f"{name}={stand_in}"


@pytest.mark.parametrize("where, command", CLI, ids=[f"{w}:{' '.join(c[1:3])}" for w, c in CLI])
def test_cli_command_parses(where, command, monkeypatch, tmp_path):
    from memgpt_jax import run_config
    from memgpt_jax.cli import build_parser

    monkeypatch.chdir(ROOT)
    argv = [_substitute(w) for w in command[1:]]
    if argv[:1] == ["bench"]:  # handed to benchmarks/__main__.py, checked below
        return
    args, unknown = build_parser().parse_known_args(argv)
    assert args.command, f"{where}: no command in {' '.join(command)}"
    overrides = [u for u in unknown if u.startswith("--config.")]
    assert not [u for u in unknown if u not in overrides], f"{where}: unknown arguments {unknown}"
    spec = getattr(args, "config", None)
    if isinstance(spec, str) and spec.startswith("configs/"):
        overrides = [_stand_in_layout(spec, o, tmp_path) for o in overrides]
        try:
            run_config.load(spec, overrides)
        except run_config.ConfigError as e:
            pytest.fail(f"{where}: {' '.join(command)}: {e}")
    else:
        assert not overrides or getattr(args, "accepts_overrides", False), f"{where}: {overrides} not accepted"


def _bench_output(module: str, flag: str) -> str:
    result = subprocess.run([sys.executable, "-m", module, flag], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("where, command", BENCH, ids=[f"{w}:{c[2]}" for w, c in BENCH])
def test_benchmark_command_flags_exist(where, command):
    module = command[2]
    path = os.path.join(ROOT, *module.split("."))
    assert os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__main__.py")), \
        f"{where}: no module {module}"
    help_text = _bench_output(module, "--help")
    for flag in [w.split("=")[0] for w in command[3:] if w.startswith("--")]:
        assert flag in help_text, f"{where}: {module} has no {flag}"
    if module == "benchmarks":  # the names it runs are the canonical benchmarks
        listed = {line.split()[0] for line in _bench_output(module, "--list").splitlines() if line.strip()}
        names = [w for w in command[3:] if not w.startswith("-")]
        assert not set(names) - listed - {"report"}, f"{where}: no benchmark {set(names) - listed}"


def _run_readme_commands_on(roots: list[str], skip: str) -> list[str]:
    """Run, in order, the README's commands (outside the block ``skip``) that read a path
    under ``roots``; what they write (``--out``, ``--workdir``) joins the roots. Stdin holds
    two ListOps lines (a piped ``classify``); a pruning recovers for two steps here."""
    import io

    from memgpt_jax.cli import main as cli_main

    roots, ran = list(roots), []
    for block in bash_blocks(open(README).read()):
        if block == skip:
            continue
        for command in commands(block):
            if command[0] != "memgpt-jax" or not any(w.startswith(r) for w in command[2:] for r in roots):
                continue
            argv = [("2" if command[i] == "--recover-steps" else w) for i, w in enumerate(command[1:])]
            sys.stdin = io.TextIOWrapper(io.BytesIO(b"[MAX 2 9 ]\n[MIN 4 7 ]\n"))
            try:
                code = cli_main(argv)
            finally:
                sys.stdin = sys.__stdin__
            assert code == 0, f"README: {' '.join(command)} exited {code}"
            roots += [command[i + 1] for i, w in enumerate(command[:-1]) if w in ("--out", "--workdir")]
            ran.append(command[1])
    return ran


@pytest.mark.slow
def test_demo_block_runs(tmp_path, monkeypatch):
    """The commands the README shows after the demo, in order, on a tiny ListOps run in
    place of ``runs/demo`` (the demo's own runs take minutes); then every other README
    command on the demo's runs (compress, classify, export)."""
    from memgpt_jax.cli import main as cli_main

    monkeypatch.setenv("MEMGPT_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "demo"
    tiny = os.path.join(ROOT, "configs", "listops_tiny.py")
    assert cli_main(["finetune", "--config", tiny, "--workdir", str(run / "teacher"), "--no-progress",
                     "--config.train.steps=2", "--config.train.eval_every=0"]) == 0
    os.symlink(run / "teacher", run / "student")
    text = open(README).read()
    block = next(b for b in bash_blocks(text) if "runs/demo/student" in b and "classify" in b)
    ran = []
    for command in commands(block):
        assert command[0] == "memgpt-jax"
        code = cli_main(command[1:])
        assert code == 0, f"README: {' '.join(command)} exited {code}"
        ran.append(command[1])
    assert ran == ["classify", "eval", "attention-map", "export"]
    assert glob.glob(str(run / "maps" / "*.png")) and os.path.isfile(run / "student-torch" / "config.json")
    # the lines the demo itself prints at the end, as it prints them (its executable's full path)
    from memgpt_jax.cli import demo

    dirs = {"teacher": str(run / "teacher"), "student": str(run / "student")}
    for line in demo.next_commands(dirs, str(run)):
        (command,) = commands(line)
        assert cli_main(command[command.index("memgpt_jax.cli") + 1:] if "memgpt_jax.cli" in command
                        else command[1:]) == 0, line
    ran = _run_readme_commands_on(["runs/demo"], skip=block)
    assert {"quantize", "prune", "classify", "saliency", "export"} <= set(ran), ran


@pytest.mark.slow
def test_training_block_runs_as_written(tmp_path, monkeypatch):
    """The README's training block, in order: preparing tiny Shakespeare (a small text in
    place of the shared file), the `:tiny` pretraining on it (two steps here) and generating
    from it as written (the new tokens must fit the model's context); then every other
    README command on that run (the Hugging Face export and back)."""
    from memgpt_jax.cli import main as cli_main

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "tinyshakespeare.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 200)
    monkeypatch.setenv("MEMGPT_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.chdir(tmp_path)
    block = next(b for b in bash_blocks(open(README).read()) if "configs/shakespeare.py:tiny" in b)
    prepare, pretrain, *rest = commands(block)
    assert prepare[:4] == ["memgpt-jax", "data", "prepare", "text"]
    assert cli_main([w.replace("$MEMGPT_SHARED_DATA", str(shared)) for w in prepare[1:]]) == 0
    assert pretrain[:2] == ["memgpt-jax", "pretrain"]
    config = [w if not w.startswith("configs/") else os.path.join(ROOT, w) for w in pretrain[1:]]
    assert cli_main(config + ["--no-progress", "--config.train.steps=2", "--config.train.eval_every=2"]) == 0
    assert [c[:2] for c in rest] == [["memgpt-jax", "generate"]]
    assert cli_main(rest[0][1:]) == 0
    workdir = pretrain[pretrain.index("--workdir") + 1]
    assert _run_readme_commands_on([workdir], skip=block) == ["export", "import"]


@pytest.mark.slow
def test_model_snippet_runs():
    """The README's Python block runs as written, pasted alone (it defines its own inputs)."""
    block = re.findall(r"^```python\n(.*?)^```", open(README).read(), flags=re.S | re.M)[0]
    scope = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["out"].logits.shape == (4, 1, scope["cfg"].vocab_size)


def test_readme_test_line_is_what_ci_runs():
    """The README's test set-up line and `.ci/run`'s last line are the same command."""
    ci = [line for line in open(os.path.join(ROOT, ".ci", "run")).read().splitlines() if line.strip()][-1]
    assert ci.startswith("python3 -m venv") and ci in bash_blocks(open(README).read())[1], ci


def test_readme_is_a_front_door():
    """Short: the detail lives in docs/."""
    assert len(open(README).read().splitlines()) <= 300


def _anchor(title: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("path", DOCS, ids=[os.path.relpath(p, ROOT) for p in DOCS])
def test_links_lead_somewhere(path):
    """Relative links in README and docs name files that exist, and headings that exist."""
    text = open(path).read()
    links = re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S))
    for link in [l for l in links if not re.match(r"^[a-z]+:", l)]:
        target, _, anchor = link.partition("#")
        target = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
        assert os.path.exists(target), f"{os.path.relpath(path, ROOT)}: {link} does not exist"
        if anchor and target.endswith(".md"):
            headings = re.findall(r"^#+ (.*)$", open(target).read(), flags=re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{os.path.relpath(path, ROOT)}: no heading #{anchor}"
