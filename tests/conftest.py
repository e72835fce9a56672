"""Shared fixtures: run recipes in smoke mode and build the smoke-mode site.

Everything here runs in fresh processes, as a reader or the build would: a
recipe is executed by a new interpreter, the site by `make`.
"""

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
LANGUAGES = ("en", "zh")
RECIPE_NAMES = sorted(p.stem for p in (RECIPES / "en").glob("*.py"))
SMOKE_BUILDDIR = REPO / "_build" / "smoke"
SMOKE_SITE = SMOKE_BUILDDIR / "html"

# Runs a script as __main__ under the Agg backend, the way Sphinx-Gallery does,
# then saves every figure it left open. Chinese recipes draw with the same
# pinned font as the site build (docs/_ext/chinese_font.py), and in both
# languages a glyph missing from the fonts is an error, as in the build.
RUNNER = r"""
import runpy, sys, warnings
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
script, figure_dir, lang, extensions = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
warnings.simplefilter("always", UserWarning)
sys.path.insert(0, extensions)
import chinese_font
chinese_font.use_fonts_of(lang)
sys.path.remove(extensions)
plt.show = lambda *args, **kwargs: None
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
figure_dir.mkdir(exist_ok=True)
for number in plt.get_fignums():
    plt.figure(number).savefig(figure_dir / f"figure_{number}.png")
"""


def smoke_env(**extra):
    """The environment of a smoke-mode run: no data, no network needed."""
    env = {k: v for k, v in os.environ.items() if k not in ("CIFAR10_ROOT", "PYTEST_XDIST_WORKER")}
    env.update(ZERO_GRAD_SMOKE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@dataclass
class ScriptRun:
    returncode: int
    stdout: str
    stderr: str
    figures: list

    def check(self):
        """Fail with the script's own output if it did not exit cleanly."""
        assert self.returncode == 0, f"exit code {self.returncode}\n{self.stdout}\n{self.stderr}"
        return self


def run_script(script, workdir, lang="en", env=None, timeout=600):
    """Run ``script`` in a fresh interpreter with ``workdir`` as its working directory."""
    workdir = Path(workdir)
    figure_dir = workdir / "figures"
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(script), str(figure_dir), lang, str(REPO / "docs" / "_ext")],
        cwd=workdir, env=env or smoke_env(), capture_output=True, text=True, timeout=timeout,
    )
    figures = sorted(figure_dir.glob("*.png")) if figure_dir.is_dir() else []
    return ScriptRun(result.returncode, result.stdout, result.stderr, figures)


# What the recipes' compare() prints: "<what>: True (max abs difference 1.86e-08)".
COMPARISON = re.compile(r"^(.+?): (True|False) \(max abs difference (\S+)\)$", re.M)


def comparisons(stdout):
    """Every comparison a recipe printed, as {what: (allclose, max abs difference)}."""
    return {m[1]: (m[2] == "True", float(m[3])) for m in COMPARISON.finditer(stdout)}


# -- Distributed recipes, run as distributed programs in an empty folder -------

TORCHRUN = Path(sys.executable).with_name("torchrun")
DISTRIBUTED_TIMEOUT = 240  # seconds; a run takes about 10 on a busy 2-core machine

# Runs the script given as its argument with ``{owner}.{attribute}`` raising
# in worker 1, the way a bug in one worker would; the recipes have no hook for
# this. With ``exits_last``, worker 1 closes its connections first and stays
# alive for three more seconds: worker 0 then fails ("Connection closed by
# peer") and exits first, so that torch.multiprocessing's join() reports
# worker 0.
FAILING_WORKER = r"""
import runpy, sys, threading, time
import torch
import torch.distributed as dist
import {owner} as owner

original = owner.{attribute}

def failing(*args, **kwargs):
    if dist.is_initialized() and dist.get_rank() == 1:{before_raising}
        raise ValueError("deliberate failure in worker 1")
    return original(*args, **kwargs)

owner.{attribute} = failing
script = sys.argv[1]
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""
EXIT_LAST = """
        threading.Thread(target=time.sleep, args=(3,)).start()
        dist.destroy_process_group()"""


def failing_worker(owner, attribute, exits_last=False):
    """The text of a wrapper script that makes ``owner.attribute`` raise in worker 1."""
    return FAILING_WORKER.format(owner=owner, attribute=attribute,
                                 before_raising=EXIT_LAST if exits_last else "")


# Runs the script given as its argument the way a notebook or the site build
# would on a machine with a GPU for each worker: this machine pretends to have
# two GPUs, and CUDA is touched before the script runs, as an earlier cell or
# recipe does. The forked workers are then in bad fork and must not try nccl.
CUDA_TOUCHED_BEFORE = r"""
import runpy, sys
import torch

torch.cuda.device_count = lambda: 2  # a GPU for each of the two workers
torch.cuda.is_available()  # what the first cell of any other recipe does: it poisons fork
script = sys.argv[1]
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""
CUDA_TOUCHED_BEFORE_FORK = "CUDA was initialised in this process before the workers were forked"


def processes_using(folder):
    """Processes still running (or unreaped) whose command line mentions ``folder``."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.pid != os.getpid() and any(str(folder) in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


def kill_and_check_leftovers(folder):
    leftovers = processes_using(folder)
    for leftover in leftovers:
        leftover.kill()
    assert not leftovers, f"processes left behind: {[p.info['cmdline'] for p in leftovers]}"


def run_in(folder, command, **env):
    """Run ``command`` in ``folder`` in smoke mode; fail on a hang or on a process left behind."""
    process = subprocess.Popen(command, cwd=folder, env=smoke_env(**env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=DISTRIBUTED_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        kill_and_check_leftovers(folder)
        pytest.fail(f"{' '.join(map(str, command))} did not finish within {DISTRIBUTED_TIMEOUT} s (a hang?)")
    kill_and_check_leftovers(folder)
    return process.returncode, stdout, stderr


def run_alone(script, lang="en"):
    """Run ``script`` as the tests run every recipe (run_script); fail on a hang or a leftover."""
    try:
        run = run_script(script, script.parent, lang, timeout=DISTRIBUTED_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_and_check_leftovers(script.parent)
        pytest.fail(f"{script.name} did not finish within {DISTRIBUTED_TIMEOUT} s (a hang?)")
    kill_and_check_leftovers(script.parent)
    return run


def copy_into_empty_folder(name, folder, lang="en"):
    """A fresh folder holding only a copy of a recipe, the same file as the page's download."""
    folder.mkdir()
    script = folder / f"{name}.py"
    shutil.copy(RECIPES / lang / f"{name}.py", script)
    return script


def under_torchrun(script, *arguments):
    return [str(TORCHRUN), "--nproc_per_node=2", "--standalone", str(script), *map(str, arguments)]


@pytest.fixture(scope="session")
def recipe_run(tmp_path_factory, worker_id, testrun_uid):
    """``recipe_run(name, lang)``: the smoke run of one recipe, run once per test session.

    The tests of one recipe may run on different xdist workers: the first to
    ask runs the recipe while the others wait on a lock, then all read the
    same record from a folder the session's workers share.
    """
    own_folder = tmp_path_factory.getbasetemp()
    shared = (own_folder if worker_id == "master" else own_folder.parent) / f"recipe-runs-{testrun_uid}"
    shared.mkdir(exist_ok=True)

    def run(name, lang):
        record = shared / f"{name}-{lang}.json"
        with open(shared / f"{name}-{lang}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not record.exists():
                workdir = shared / f"{name}-{lang}"
                workdir.mkdir()
                result = run_script(RECIPES / lang / f"{name}.py", workdir, lang)
                record.write_text(json.dumps({**asdict(result), "figures": [str(f) for f in result.figures]}))
        fields = json.loads(record.read_text())
        return ScriptRun(**{**fields, "figures": [Path(f) for f in fields["figures"]]}).check()

    return run


@pytest.fixture(scope="session")
def smoke_site(testrun_uid):
    """Build both languages in smoke mode into _build/smoke with -W; return the html folder.

    Built once per test session: the first xdist worker to get here builds it
    while the others wait on the lock, then all read the same site.
    """
    SMOKE_BUILDDIR.mkdir(parents=True, exist_ok=True)
    stamp = SMOKE_BUILDDIR / "built-by-session"
    with open(SMOKE_BUILDDIR / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != testrun_uid:
            stamp.unlink(missing_ok=True)
            result = subprocess.run(
                ["make", "--no-print-directory", "html-smoke"],  # into _build/smoke, i.e. SMOKE_BUILDDIR
                cwd=REPO, env=smoke_env(), capture_output=True, text=True, timeout=900,
            )
            assert result.returncode == 0, f"smoke build failed\n{result.stdout}\n{result.stderr}"
            stamp.write_text(testrun_uid)
    return SMOKE_SITE


def pytest_addoption(parser):
    parser.addoption("--run-external", action="store_true", help="also check external links")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--run-external"):
        skip = pytest.mark.skip(reason="external links need the internet: make linkcheck-external")
        for item in items:
            if "external" in item.keywords:
                item.add_marker(skip)
