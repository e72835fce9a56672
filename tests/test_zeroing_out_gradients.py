"""The flagship recipe, run in smoke mode: does it show what it claims to show?"""

import math
import re

import pytest

from conftest import LANGUAGES

ROW = re.compile(r"^(with|without) zero_grad\(\)\s+([\d,]+)\s+(\S+)\s+([\d.]+)%\s+([\d.]+)$", re.M)


def summary_rows(stdout):
    """The final table as {"with": (steps, final_loss, accuracy), "without": ...}."""
    rows = {m[1]: (int(m[2].replace(",", "")), float(m[3]), float(m[4])) for m in ROW.finditer(stdout)}
    assert set(rows) == {"with", "without"}, f"no summary table in the output:\n{stdout}"
    return rows


@pytest.mark.parametrize("lang", LANGUAGES)
def test_says_which_device_it_uses(recipe_run, lang):
    assert re.search(r"^Using device: (cpu|cuda)", recipe_run("zeroing_out_gradients", lang).stdout, re.M)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_skipping_zero_grad_ends_far_worse(recipe_run, lang):
    rows = summary_rows(recipe_run("zeroing_out_gradients", lang).stdout)
    with_loss, without_loss = rows["with"][1], rows["without"][1]
    assert math.isfinite(with_loss)
    assert not math.isfinite(without_loss) or without_loss > 1.5 * with_loss, rows


@pytest.mark.parametrize("lang", LANGUAGES)
def test_both_runs_take_the_same_batches(recipe_run, lang):
    """Unless the run without zero_grad stopped on a non-finite loss, both train the same steps."""
    stdout = recipe_run("zeroing_out_gradients", lang).stdout
    rows = summary_rows(stdout)
    if "Non-finite loss" not in stdout:
        assert rows["with"][0] == rows["without"][0]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_marks_the_divergence_point_on_one_figure(recipe_run, lang):
    run = recipe_run("zeroing_out_gradients", lang)
    assert re.search(r"^Divergence point: step [\d,]+", run.stdout, re.M)
    assert len(run.figures) == 1
    assert "missing from font" not in run.stderr, run.stderr


@pytest.mark.parametrize("lang", LANGUAGES)
def test_optimizer_zero_grad_only_clears_its_own_parameters(recipe_run, lang):
    stdout = recipe_run("zeroing_out_gradients", lang).stdout
    counts = [int(n) for n in re.findall(r"^after [\w.()]+:\s+(\d+)", stdout, re.M)]
    assert counts == [10, 8, 0], stdout
