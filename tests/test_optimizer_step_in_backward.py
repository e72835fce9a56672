"""The optimizer-step-in-backward recipe, run in smoke mode: does it show what it claims to show?"""

import re

import pytest

from conftest import LANGUAGES

NAME = "optimizer_step_in_backward"
CATEGORIES = ["parameters", "gradients", "optimizer state", "saved for backward", "other"]
ROW = re.compile(r"^(full batch|accumulation|checkpointing|step in backward|step on last) +((?:[\d.]+ +){5}[\d.]+)"
                 r"(?: +(\d+))?$", re.M)
COMPARISON = re.compile(r"^(.+?): bit for bit (True|False), relative error of the update (\S+), close (True|False)$",
                        re.M)


def tables(stdout):
    """Every memory table the recipe printed: {title: {variant: {category or "peak": MiB}}}."""
    found = {}
    for block in re.split(r"^(?=AdamW, batch)", stdout, flags=re.M)[1:]:
        title, _, body = block.partition("\n")
        rows = {}
        for match in ROW.finditer(body.split("\n\n")[0]):
            values = [float(v) for v in match[2].split()]
            rows[match[1]] = dict(zip(CATEGORIES + ["peak"], values))
            if match[3]:
                rows[match[1]]["ms"] = float(match[3])
        found[title] = rows
    return found


def table(stdout, start):
    matching = [rows for title, rows in tables(stdout).items() if title.startswith(start)]
    assert len(matching) == 1, f"no single table titled {start!r}\n{stdout}"
    return matching[0]


def comparisons(stdout):
    return {m[1]: (m[2] == "True", float(m[3]), m[4] == "True") for m in COMPARISON.finditer(stdout)}


def parameter_mib(stdout):
    return float(re.search(r"^\d+ blocks of width \d+: (\d+) parameter tensors, (\S+) MiB of parameters$",
                           stdout, re.M)[2])


def batch_sizes(stdout):
    titles = [title for title in tables(stdout) if re.match(r"AdamW, batch \d+ \(", title)]
    sizes = sorted(int(re.match(r"AdamW, batch (\d+)", title)[1]) for title in titles)
    assert len(sizes) == 2 and sizes[0] < sizes[1], titles
    return sizes


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_variant_holds_the_same_parameters_and_state(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert re.search(r"^Using device: (cpu|cuda)", stdout, re.M), stdout
    parameters = parameter_mib(stdout)
    small, large = batch_sizes(stdout)
    for size in (small, large):
        rows = table(stdout, f"AdamW, batch {size} (")
        assert list(rows) == ["full batch", "accumulation", "checkpointing", "step in backward"]
        for row in rows.values():
            assert row["parameters"] == pytest.approx(parameters, abs=0.02)
            assert row["optimizer state"] == pytest.approx(2 * parameters, abs=0.05)  # AdamW: two tensors each
            assert row["peak"] == pytest.approx(sum(row[c] for c in CATEGORIES), abs=0.05)
    assert all(row["ms"] > 0 for row in table(stdout, f"AdamW, batch {small} (").values())


@pytest.mark.parametrize("lang", LANGUAGES)
def test_small_batch_peak_is_the_gradients_and_the_step_in_backward_removes_them(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    parameters = parameter_mib(stdout)
    rows = table(stdout, f"AdamW, batch {batch_sizes(stdout)[0]} (")
    full, accumulation, checkpointing, in_backward = (rows[v] for v in rows)
    # Full batch: the peak is at the end of backward, every gradient alive, few activations.
    assert full["gradients"] == pytest.approx(parameters, abs=0.02)
    assert full["saved for backward"] < full["gradients"] / 4
    # Accumulation and checkpointing do not go below it; the step in backward does, holding one gradient.
    assert accumulation["peak"] >= full["peak"] - 0.01
    assert checkpointing["peak"] >= full["peak"] - 0.01
    assert in_backward["gradients"] < parameters / 8
    assert in_backward["peak"] < min(full["peak"], accumulation["peak"], checkpointing["peak"]) - parameters / 2


@pytest.mark.parametrize("lang", LANGUAGES)
def test_large_batch_peak_is_the_activations_and_the_step_in_backward_brings_nothing(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    parameters = parameter_mib(stdout)
    rows = table(stdout, f"AdamW, batch {batch_sizes(stdout)[1]} (")
    full, accumulation, checkpointing, in_backward = (rows[v] for v in rows)
    # Full batch: the peak is at the start of backward, every activation alive and no gradient yet.
    assert full["saved for backward"] > parameters
    assert full["gradients"] < 0.02
    assert accumulation["saved for backward"] < full["saved for backward"] / 2
    assert accumulation["peak"] < full["peak"] and checkpointing["peak"] < accumulation["peak"]
    assert in_backward["peak"] == pytest.approx(full["peak"], rel=0.02)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_updates_equal_the_full_batch_loop(recipe_run, lang):
    found = comparisons(recipe_run(NAME, lang).stdout)
    for optimizer in ("SGD with momentum", "AdamW"):
        for variant in ("checkpointing", "step in backward"):
            assert found[f"{optimizer}, {variant} vs full batch"] == (True, 0.0, True), found
        same, error, close = found[f"{optimizer}, accumulation vs full batch"]
        assert close and 0 < error < 1e-2
    assert found["SGD with momentum, accumulation vs full batch"][1] < 1e-4  # rounding only


@pytest.mark.parametrize("lang", LANGUAGES)
def test_where_zero_grad_went(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    count = re.search(r"^parameters with a \.grad after backward: (\d+) of (\d+)$", stdout, re.M)
    assert count and count[1] == "0" and int(count[2]) > 0, stdout
    assert re.search(r"^leftover optimizer\.step\(\) changed the parameters: False$", stdout, re.M)
    assert re.search(r"^clip_grad_norm_ after backward returns: 0\.0$", stdout, re.M)
    kept = float(re.search(r"^hook without zero_grad: (\S+) MiB of gradients kept after backward$", stdout, re.M)[1])
    assert kept == pytest.approx(parameter_mib(stdout), abs=0.1)
    same, error, close = comparisons(stdout)["hook without zero_grad vs full batch"]
    assert not same and not close and error > 0.01


@pytest.mark.parametrize("lang", LANGUAGES)
def test_accumulation_steps_every_micro_batch_unless_the_hook_waits(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    found = comparisons(stdout)
    micro_batches = int(re.search(r"^AdamW, batch \d+ in (\d+) micro-batches, MiB at the peak$", stdout, re.M)[1])
    wrong = int(re.search(r"^hook steps every micro-batch: (\d+) optimizer steps in 2 updates$", stdout, re.M)[1])
    fixed = int(re.search(r"^step on the last micro-batch: (\d+) optimizer steps in 2 updates$", stdout, re.M)[1])
    assert micro_batches > 1 and wrong == 2 * micro_batches and fixed == 2
    same, error, close = found["hook steps every micro-batch vs accumulation"]
    assert not close and error > 0.5
    assert found["step on the last micro-batch vs accumulation"][2] is True
    # The fix holds every gradient again: no memory saved against plain accumulation.
    rows = tables(stdout)[next(t for t in tables(stdout) if " in " in t)]
    assert rows["step on last"]["gradients"] == pytest.approx(parameter_mib(stdout), rel=0.05)
    assert rows["step on last"]["peak"] >= 0.98 * rows["accumulation"]["peak"]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_global_norm_clipping_cannot_be_done_in_the_hooks(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    alive = re.search(r"^gradients alive when the first hook runs: (\d+) of (\d+); most at any hook: (\d+)$",
                      stdout, re.M)
    assert alive and alive[1] == "1" and alive[3] == "1" and int(alive[2]) > 1, stdout
    norm, max_norm = map(float, re.search(r"^gradient norm (\S+), max_norm (\S+)$", stdout, re.M).groups())
    assert norm > max_norm, "clipping must be active for the comparison to mean anything"
    same, error, close = comparisons(stdout)["per-parameter clipping vs global-norm clipping"]
    assert not close and error > 0.1


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_per_parameter_optimizer_needs_its_scheduler(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    runs = {m[1]: (float(m[2]), [float(r) for r in m[3].split(", ")]) for m in re.finditer(
        r"^(one scheduler .+?): scheduled lr (\S+), lr of the optimizers that step: \[(.+)\]$", stdout, re.M)}
    scheduled, rates = runs["one scheduler per optimizer"]
    assert rates == [scheduled]
    scheduled_wide, rates_wide = runs["one scheduler on a model-wide optimizer"]
    assert scheduled_wide == scheduled and len(rates_wide) == 1 and rates_wide[0] > 2 * scheduled
    warnings = re.findall(r"^  PyTorch warned: (.+)$", stdout, re.M)
    assert warnings == ["Detected call of `lr_scheduler.step()` before `optimizer.step()`."], warnings
    assert stdout.index("  PyTorch warned") > stdout.index("one scheduler on a model-wide optimizer")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_draws_one_figure_with_every_glyph(recipe_run, lang):
    run = recipe_run(NAME, lang)
    assert len(run.figures) == 1
    assert "missing from font" not in run.stderr, run.stderr
