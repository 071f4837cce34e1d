"""The package as a user installs it (``pip install .``, not ``-e``): the wheel holds every
module and every config, and the installed commands run from a directory that is not the
checkout (the demo's first stage, ``info``, ``smoke``, the README's model imports)."""

import glob
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "memgpt_jax", "configs")  # what the build reads


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the sources (building in place would write build/ into
    the checkout, under the feet of a concurrent run), offline: the current environment's
    setuptools, no isolation."""
    pytest.importorskip("setuptools", minversion="70.1", reason="builds wheels without the wheel package")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if os.path.isdir(os.path.join(ROOT, name)):
            shutil.copytree(os.path.join(ROOT, name), src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(os.path.join(ROOT, name), src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True, text=True)
    (path,) = glob.glob(str(tmp / "dist" / "memgpt_jax-*.whl"))
    return path


def test_wheel_holds_every_module_and_config(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = {n for n in z.namelist() if n.endswith(".py")}
    modules = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "memgpt_jax", "**", "*.py"),
                                                           recursive=True)}
    configs = {f"memgpt_jax/configs/{os.path.basename(p)}" for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))}
    assert "memgpt_jax/configs/listops.py" in configs  # the demo's
    assert modules - names == set(), "a package missing from setup.cfg [options] packages"
    assert configs - names == set(), "a config missing from the wheel (setup.cfg package_dir)"


@pytest.mark.slow
def test_installed_commands_run_outside_the_checkout(wheel, tmp_path):
    """A venv holding only the wheel (its dependencies come from this environment through a
    .pth line, so nothing is downloaded), run from an empty directory."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "memgpt-jax")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "_deps.pth"), "w") as f:
        f.writelines(f"{d}\n" for d in dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib")))
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q",
                    wheel], check=True, capture_output=True, text=True)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MEMGPT_DATA_DIR")}

    def run(*args):
        out = subprocess.run(args, cwd=empty, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout + out.stderr

    imported = run(python, "-c", "from memgpt_jax import model as M; from memgpt_jax.config import ModelConfig; "
                                 "print(M.__file__)")
    assert imported.strip().startswith(site)  # the installed copy, not the checkout
    assert "parameters:" in run(cli, "info", "--preset", "tiny")
    assert "greedy KV-cache decode" in run(cli, "smoke", "--seq-len", "16", "--new-tokens", "4", "--batch", "1")
    # the demo as the quickstart installs it: without torch
    blocker = tmp_path / "no_torch" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    env["PYTHONPATH"] = str(blocker.parent)
    demo = run(cli, "demo", "--teacher-steps", "2", "--student-steps", "2", "--no-progress", "--workdir", "runs/demo")
    assert "== 2/3 student" in demo and "student/teacher: parameters" in demo
    assert os.listdir(empty / "runs" / "demo" / "teacher" / "checkpoints")
    demo = run(cli, "demo", "--teacher-only", "--teacher-steps", "2", "--no-progress", "--workdir", "runs/demo")
    assert "== 1/3 teacher" in demo and "without --teacher-only" in demo and "nothing to do" in demo  # reused
    assert sorted(os.listdir(empty)) == ["runs"]  # the workdir, and nothing of the checkout needed


def test_demo_next_commands_run_in_a_new_shell(monkeypatch, tmp_path):
    """The lines the demo prints name this installation's command by its full path (a venv's
    bin/ is not on a new shell's PATH), or this Python with -m when no script started it."""
    from memgpt_jax.cli import demo

    dirs = {"teacher": "/r/teacher", "student": "/r/student"}
    script = tmp_path / "venv bin" / "memgpt-jax"
    script.parent.mkdir()
    script.write_text("")
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    assert {shlex.split(c)[0] for c in demo.next_commands(dirs, "/r")} == {str(script)}
    monkeypatch.setattr(sys, "argv", [os.path.join(ROOT, "pytest"), "tests"])
    assert {tuple(shlex.split(c)[:3]) for c in demo.next_commands(dirs, "/r")} == {(sys.executable, "-m",
                                                                                    "memgpt_jax.cli")}
    subprocess.run([sys.executable, "-m", "memgpt_jax.cli", "classify", "--help"], check=True, capture_output=True)
