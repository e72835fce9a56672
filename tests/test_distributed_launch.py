"""The distributed recipes as distributed programs, each in a fresh empty folder.

Every test runs a copy of a recipe (the same file as the page's download)
alone and under ``torchrun``, and fails on a hang, on a process left behind,
or on a worker error that does not reach the surface. What each recipe shows
is tested in its own tests/test_NAME.py.
"""

import re
import sys

import pytest

from conftest import (
    CUDA_TOUCHED_BEFORE,
    CUDA_TOUCHED_BEFORE_FORK,
    copy_into_empty_folder,
    failing_worker,
    run_alone,
    run_in,
    under_torchrun,
)
from test_site import without_timings

# Each distributed recipe, and a function its workers call early, which a test makes raise in worker 1.
FAILURE_POINTS = {
    "distributed_accumulation": ("torch.optim", "SGD.step"),
    "distributed_pitfalls": ("torch.nn.functional", "cross_entropy"),
}
RECIPES = pytest.mark.parametrize("name", sorted(FAILURE_POINTS))


@RECIPES
def test_runs_alone_and_under_torchrun_with_the_same_results(tmp_path, name):
    alone = copy_into_empty_folder(name, tmp_path / "alone")
    alone_stdout = run_alone(alone).check().stdout
    assert sorted(p.name for p in alone.parent.iterdir()) == sorted([alone.name, "figures"]), \
        "the run left files behind"

    script = copy_into_empty_folder(name, tmp_path / "torchrun")
    code, torchrun_stdout, stderr = run_in(script.parent, under_torchrun(script))
    assert code == 0, stderr
    assert re.search(r"^Backend: (gloo|nccl), world size: 2$", torchrun_stdout, re.M), torchrun_stdout
    # Only rank 0 prints, and it prints what the script prints on its own.
    assert without_timings(torchrun_stdout) == without_timings(alone_stdout)
    assert [p.name for p in script.parent.iterdir()] == [script.name], "the run left files behind"


@RECIPES
@pytest.mark.parametrize("launch", ["alone", "torchrun"])
def test_a_worker_that_raises_fails_the_script_with_its_error(tmp_path, name, launch):
    script = copy_into_empty_folder(name, tmp_path / "run")
    wrapper = tmp_path / "failing_worker.py"
    wrapper.write_text(failing_worker(*FAILURE_POINTS[name]))
    command = [sys.executable, str(wrapper), str(script)] if launch == "alone" else under_torchrun(wrapper, script)
    (tmp_path / "tmp").mkdir()  # torch.multiprocessing leaves a failed worker's traceback file there
    code, stdout, stderr = run_in(script.parent, command, TMPDIR=str(tmp_path / "tmp"))
    assert code != 0
    assert "ValueError: deliberate failure in worker 1" in stderr, stderr
    assert "Using device" not in stdout, "the script went on after a worker failed"


@RECIPES
def test_the_first_failure_is_reported_even_when_another_worker_exits_first(tmp_path, name):
    script = copy_into_empty_folder(name, tmp_path / "run")
    wrapper = tmp_path / "failing_worker.py"
    wrapper.write_text(failing_worker(*FAILURE_POINTS[name], exits_last=True))
    (tmp_path / "tmp").mkdir()
    code, stdout, stderr = run_in(script.parent, [sys.executable, str(wrapper), str(script)],
                                  TMPDIR=str(tmp_path / "tmp"))
    assert code != 0
    assert "-- Process 0 terminated" in stderr, "join() did not report worker 0 first: this tests nothing"
    assert "RuntimeError: the first worker to fail was worker 1" in stderr, stderr
    assert "ValueError: deliberate failure in worker 1" in stderr, stderr


@RECIPES
def test_workers_forked_after_cuda_was_touched_fall_back_to_gloo_and_say_so(tmp_path, name):
    """The multi-GPU machine where the build (or a notebook) used CUDA first: no crash, no hang."""
    script = copy_into_empty_folder(name, tmp_path / "run")
    wrapper = tmp_path / "cuda_touched_before.py"
    wrapper.write_text(CUDA_TOUCHED_BEFORE)
    code, stdout, stderr = run_in(script.parent, [sys.executable, str(wrapper), str(script)])
    assert code == 0, stderr
    assert CUDA_TOUCHED_BEFORE_FORK in stdout, stdout
    assert re.search(r"^Using device: cpu$", stdout, re.M), stdout
    assert re.search(r"^Backend: gloo, world size: 2$", stdout, re.M), stdout
