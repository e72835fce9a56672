"""The distributed accumulation recipe: what it demonstrates, in both languages.

The smoke runs (``recipe_run``) check the printed results; the last test checks
that the build's execution record leaves fork usable for CUDA, which this
recipe's self-started workers need. How the recipe behaves as a distributed
program is tested in test_distributed_launch.py.
"""

import re
import subprocess
import sys

import pytest

from conftest import (
    CUDA_TOUCHED_BEFORE_FORK,
    LANGUAGES,
    REPO,
    comparisons,
    smoke_env,
)

NAME = "distributed_accumulation"
LOOPS = ("sync every micro-batch", "no_sync: forward and backward", "no_sync: backward only")


def allreduce_table(stdout):
    """{accumulation loop: (all-reduce calls per step, time per step in ms)} and the bucket count."""
    buckets, k = map(int, re.search(r"^DDP buckets: (\d+), micro-batches per step: K = (\d+)$", stdout, re.M).groups())
    rows = {m[1]: (int(m[2]), float(m[3]))
            for m in re.finditer(r"^(.+?) {2,}(\d+) +(\S+)$", stdout, re.M) if m[1] in LOOPS}
    assert set(rows) == set(LOOPS), stdout
    return rows, buckets, k


# -- What the page shows ------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_says_where_it_ran(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    device = re.search(r"^Using device: (\S+)$", stdout, re.M)[1]
    backend, world_size = re.search(r"^Backend: (\w+), world size: (\d+)$", stdout, re.M).groups()
    assert world_size == "2"
    assert (device, backend) == ("cpu", "gloo") or (device.startswith("cuda") and backend == "nccl")


def test_says_nothing_about_cuda_where_it_never_meant_to_use_it(recipe_run):
    assert CUDA_TOUCHED_BEFORE_FORK not in recipe_run(NAME, "en").stdout


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("what", LOOPS + ("FSDP2, set_requires_gradient_sync", "FSDP2, and set_reshard_after_backward"))
def test_accumulated_gradient_is_the_full_batch_gradient(recipe_run, lang, what):
    stdout = recipe_run(NAME, lang).stdout
    same, difference = comparisons(stdout)[f"{what} == full batch"]
    assert same is True, stdout
    assert difference < 1e-6, stdout  # rounding: the largest gradient entry is about 0.16


@pytest.mark.parametrize("lang", LANGUAGES)
def test_no_sync_cuts_the_allreduce_calls_to_one_per_bucket(recipe_run, lang):
    rows, buckets, k = allreduce_table(recipe_run(NAME, lang).stdout)
    assert buckets > 1 and k > 1
    assert rows["sync every micro-batch"][0] == k * buckets
    assert rows["no_sync: forward and backward"][0] == buckets


@pytest.mark.parametrize("lang", LANGUAGES)
def test_no_sync_around_backward_alone_still_allreduces_every_micro_batch(recipe_run, lang):
    rows, buckets, k = allreduce_table(recipe_run(NAME, lang).stdout)
    assert rows["no_sync: backward only"][0] == k * buckets == rows["sync every micro-batch"][0]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_fsdp2_sync_off_saves_reduce_scatters_not_all_gathers(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    rows = {m[1]: (int(m[2]), int(m[3])) for m in re.finditer(
        r"^(gradient sync on|set_requires_gradient_sync|and set_reshard_after_backward) +(\d+) +(\d+)$",
        stdout, re.M)}
    assert len(rows) == 3, stdout
    sync, no_sync, no_reshard = (rows[name] for name in
                                 ("gradient sync on", "set_requires_gradient_sync", "and set_reshard_after_backward"))
    k = int(re.search(r"micro-batches per step: K = (\d+)$", stdout, re.M)[1])
    assert sync[1] == k * no_sync[1] > 0  # one reduce-scatter per sharded layer, in the last backward only
    assert no_reshard[1] == no_sync[1]
    assert no_sync[0] == sync[0]  # the all-gathers stay
    assert 0 < no_reshard[0] < no_sync[0]  # keeping the parameters unsharded saves some


@pytest.mark.parametrize("lang", LANGUAGES)
def test_prints_its_timeout_and_the_default(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    match = re.search(r"^Process-group timeout: (\d+) s here; torch\.distributed's default: (\d+) min", stdout, re.M)
    assert match, stdout
    assert int(match[1]) < 60 * int(match[2])


@pytest.mark.parametrize("lang", LANGUAGES)
def test_reports_a_time_per_step(recipe_run, lang):
    rows, _, _ = allreduce_table(recipe_run(NAME, lang).stdout)
    assert all(milliseconds > 0 for _, milliseconds in rows.values()), rows


@pytest.mark.parametrize("lang", LANGUAGES)
def test_draws_one_figure_with_every_glyph(recipe_run, lang):
    run = recipe_run(NAME, lang)
    assert len(run.figures) == 1
    assert "missing from font" not in run.stderr, run.stderr


# Run as a distributed program (alone, under torchrun, failing workers, CUDA touched before
# the fork): tests/test_distributed_launch.py, for every distributed recipe.


def test_the_builds_execution_record_leaves_fork_usable_for_cuda():
    """The record before each recipe finds the device without poisoning fork (NVML, not cudaGetDeviceCount)."""
    probe = r"""
import sys
sys.path.insert(0, sys.argv[1])
import torch
import torch.multiprocessing as mp
import execution_record

def child(queue):
    queue.put(torch.cuda._is_in_bad_fork())

def forked_child_in_bad_fork():
    context = mp.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    answer = queue.get(timeout=60)
    process.join()
    return answer

execution_record.execution_record()
print("after the record:", forked_child_in_bad_fork())
torch.cuda.is_available()
print("after is_available():", forked_child_in_bad_fork())
"""
    result = subprocess.run([sys.executable, "-c", probe, str(REPO / "docs" / "_ext")], env=smoke_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "after the record: False" in result.stdout, result.stdout
    # The check can fail: what the build did before (is_available()) poisons fork, even on this CPU machine.
    assert "after is_available(): True" in result.stdout, result.stdout
