"""The distributed pitfalls recipe: what it demonstrates, and that it behaves as a distributed program.

The smoke runs (``recipe_run``) check the printed results in both languages:
the three token-weighted loops, the table of DDP options, FSDP2's collectives
and the bytes it holds, the ``require_backward_grad_sync`` toggle. How the
recipe behaves as a distributed program is tested in test_distributed_launch.py.
"""

import importlib.metadata
import re

import pytest

from conftest import (
    LANGUAGES,
)

NAME = "distributed_pitfalls"
# torch's version without importing it; torch.__version__ may add a local part ("+cpu").
TORCH_VERSION = importlib.metadata.version("torch").split("+")[0]
PRINTED_VERSION = rf"{re.escape(TORCH_VERSION)}(?:\+\w+)?"
LAYERS = 3  # the Linear layers of the recipe's FSDP2 model, each its own fully_shard unit
TOKEN_LOOPS = ("per-worker mean / K", "global count, loss x world size", "global count, summing hook")
FSDP_CONFIGS = ("sync every micro-batch", "no gradient sync", "+ keep after backward", "+ keep after forward")
TOGGLE_LOOPS = ("no_sync()", "toggle before forward", "toggle before backward")


def rows(stdout, names, columns):
    """{name: [column values]} for the printed table rows that start with one of ``names``."""
    found = {}
    for name in names:
        match = re.search(rf"^{re.escape(name)} {{2,}}(.+?)\s*$", stdout, re.M)
        assert match, f"no row {name!r}\n{stdout}"
        found[name] = re.split(r" {2,}", match[1].strip())
        assert len(found[name]) == columns, (name, found[name])
    return found


def k_of(stdout, what):
    return int(re.search(rf"^{what}.*K = (\d+)", stdout, re.M)[1])


# -- What the page shows ------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_says_where_it_ran_and_which_torch(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert re.search(rf"^torch {PRINTED_VERSION}$", stdout, re.M), stdout
    device = re.search(r"^Using device: (\S+)$", stdout, re.M)[1]
    backend, world_size = re.search(r"^Backend: (\w+), world size: (\d+)$", stdout, re.M).groups()
    assert world_size == "2"
    assert (device, backend) == ("cpu", "gloo") or (device.startswith("cuda") and backend == "nccl")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_workers_get_uneven_token_counts(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    counts = [int(c) for c in re.search(r"^real tokens per worker: \[(\d+), (\d+)\]$", stdout, re.M).groups()]
    assert counts[0] > 3 * counts[1] > 0, counts


@pytest.mark.parametrize("lang", LANGUAGES)
def test_only_the_global_token_count_gives_the_full_batch_gradient(recipe_run, lang):
    table = rows(recipe_run(NAME, lang).stdout, TOKEN_LOOPS, 3)
    errors = {name: float(values[0]) for name, values in table.items()}
    assert errors["per-worker mean / K"] > 0.05, errors
    assert errors["global count, loss x world size"] < 1e-5, errors
    assert errors["global count, summing hook"] < 1e-5, errors


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_global_count_costs_one_more_allreduce(recipe_run, lang):
    table = rows(recipe_run(NAME, lang).stdout, TOKEN_LOOPS, 3)
    gradient_calls = {int(values[1]) for values in table.values()}
    assert gradient_calls == {1}, table  # one bucket, synchronized once, under no_sync()
    assert [int(values[2]) for values in table.values()] == [0, 1, 1], table


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_token_weighted_logged_loss_is_the_single_process_loss(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    single = float(re.search(r"^single-process loss over all tokens: (\S+)$", stdout, re.M)[1])
    weighted = float(re.search(r"^token-weighted: (\S+)$", stdout, re.M)[1])
    average = float(re.search(r"^average of worker means: (\S+)$", stdout, re.M)[1])
    assert weighted == pytest.approx(single, abs=1e-4)
    assert abs(average - single) > 1e-3


# The table as torch 2.14.1 fills it: the page's prose describes these cells.
EXPECTED_TABLE = {
    "plain DDP": ("correct", "correct"),
    "find_unused_parameters, two branches": ("correct", "correct"),
    "static_graph": ("correct", "raises (a)"),
    "static_graph, first step synced": ("correct", "correct"),
    "checkpoint, non-reentrant": ("correct", "correct"),
    "checkpoint, reentrant": ("correct", "correct"),
    "checkpoint non-reentrant + find_unused": ("correct", "correct"),
    "checkpoint reentrant + find_unused": ("raises (b)", "raises (b)"),
    "checkpoint reentrant + static_graph": ("correct", "raises (a)"),
}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_ddp_options_table(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert re.search(rf"^DDP options with no_sync\(\), torch {PRINTED_VERSION}, ", stdout, re.M), stdout
    table = {name: tuple(values) for name, values in rows(stdout, EXPECTED_TABLE, 2).items()}
    if TORCH_VERSION != "2.14.1":
        pytest.skip(f"the expected cells are those of torch 2.14.1, not {TORCH_VERSION}")
    assert table == EXPECTED_TABLE, stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_errors_are_printed_as_one_short_line(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    errors = dict(re.findall(r"^\(([a-h])\) (.+)$", stdout, re.M))
    assert errors["a"].startswith("RuntimeError: expect_autograd_hooks_ INTERNAL ASSERT FAILED"), errors
    assert errors["b"].startswith("RuntimeError: Expected to mark a variable ready only once"), errors
    for error in errors.values():
        assert len(error) < 120 and "/" not in error and "Traceback" not in error, error


@pytest.mark.parametrize("lang", LANGUAGES)
def test_fsdp2_collectives_per_step(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    k = k_of(stdout, "FSDP2")
    table = rows(stdout, FSDP_CONFIGS, 5)
    counts = {name: (int(values[0]), int(values[1])) for name, values in table.items()}
    assert counts == {
        # Forward and backward all-gather every layer, every micro-batch.
        "sync every micro-batch": (2 * LAYERS * k, LAYERS * k),
        "no gradient sync": (2 * LAYERS * k, LAYERS),
        # The first forward gathers, then only the backward passes do.
        "+ keep after backward": (LAYERS + LAYERS * k, LAYERS),
        "+ keep after forward": (LAYERS, LAYERS),
    }, stdout
    assert all(values[4] == "== full batch" for values in table.values()), stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_fsdp2_bytes_held_between_micro_batches(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    whole = int(re.search(r"^FSDP2, K = \d+, whole model: (\d+) bytes of parameters$", stdout, re.M)[1])
    held = {name: (int(values[2]), int(values[3])) for name, values in rows(stdout, FSDP_CONFIGS, 5).items()}
    shard, shard_gradients = held["sync every micro-batch"]
    assert shard == shard_gradients and 0.45 * whole < shard < 0.55 * whole, held
    assert held["no gradient sync"] == (shard, whole), held
    assert held["+ keep after backward"] == (shard + whole, whole), held
    assert held["+ keep after forward"] == (shard + whole, whole), held


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_toggle_before_forward_is_no_sync_and_before_backward_is_wrong(recipe_run, lang):
    table = rows(recipe_run(NAME, lang).stdout, TOGGLE_LOOPS, 2)
    assert {int(values[0]) for values in table.values()} == {1}, table
    assert table["no_sync()"][1] == table["toggle before forward"][1] == "correct", table
    match = re.fullmatch(r"wrong \((\S+)\)", table["toggle before backward"][1])
    assert match and float(match[1]) > 1e-3, table


@pytest.mark.parametrize("lang", LANGUAGES)
def test_draws_one_figure_with_every_glyph(recipe_run, lang):
    run = recipe_run(NAME, lang)
    assert len(run.figures) == 1
    assert "missing from font" not in run.stderr, run.stderr


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_workers_print_no_warning(recipe_run, lang):
    stderr = recipe_run(NAME, lang).stderr
    assert "Warning" not in stderr, stderr


# Run as a distributed program (alone, under torchrun, failing workers, CUDA touched before
# the fork): tests/test_distributed_launch.py, for every distributed recipe.
