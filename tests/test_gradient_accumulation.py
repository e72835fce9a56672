"""The gradient accumulation recipe, run in smoke mode: does it show what it claims to show?"""

import re

import pytest

from conftest import LANGUAGES

NAME = "gradient_accumulation"
COMPARISON = re.compile(r"^(.+?): (True|False) \(max abs difference (\S+)\)$", re.M)


def comparisons(stdout):
    """Every printed comparison as {description: (allclose, max abs difference)}."""
    return {m[1]: (m[2] == "True", float(m[3])) for m in COMPARISON.finditer(stdout)}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_says_which_device_it_uses(recipe_run, lang):
    assert re.search(r"^Using device: (cpu|cuda)", recipe_run(NAME, lang).stdout, re.M)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_accumulated_gradient_matches_the_full_batch(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert comparisons(stdout)["accumulated == full batch"][0] is True, stdout


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("mistake", [
    "no division by k == full batch",
    "sum reduction, divided by k == full batch",
    "batch norm, accumulated == full batch",
])
def test_mistakes_do_not_match(recipe_run, lang, mistake):
    found = comparisons(recipe_run(NAME, lang).stdout)
    same, difference = found[mistake]
    assert same is False
    # Not rounding: far larger than the difference of the correct accumulation.
    assert difference > 0
    assert difference > 100 * found["accumulated == full batch"][1], found


@pytest.mark.parametrize("lang", LANGUAGES)
def test_without_division_the_gradient_is_k_times_too_large(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert comparisons(stdout)["no division by k == k x full batch"][0] is True, stdout
    ratio, k = re.search(r"^no division / full batch gradient norm: (\S+) \(k = (\d+)\)$", stdout, re.M).groups()
    assert int(k) > 1
    assert float(ratio) == pytest.approx(int(k), rel=1e-3)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_summed_loss_is_right_without_division(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert comparisons(stdout)["sum reduction, not divided == full batch"][0] is True, stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_loss_curves_coincide(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    runs = {m[1]: (int(m[2]), float(m[3])) for m in
            re.finditer(r"^(full batch|accumulated): (\d+) updates, final loss (\S+)$", stdout, re.M)}
    assert set(runs) == {"full batch", "accumulated"}, stdout
    assert runs["full batch"][0] == runs["accumulated"][0] > 1
    difference = float(re.search(r"^max difference between the two loss histories: (\S+)$", stdout, re.M)[1])
    assert difference < 1e-4 * runs["full batch"][1], stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_draws_one_figure_with_every_glyph(recipe_run, lang):
    run = recipe_run(NAME, lang)
    assert len(run.figures) == 1
    assert "missing from font" not in run.stderr, run.stderr
