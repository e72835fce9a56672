"""The gradient accumulation recipe, run in smoke mode: does it show what it claims to show?"""

import re

import pytest

from conftest import LANGUAGES, comparisons

NAME = "gradient_accumulation"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_says_which_device_it_uses(recipe_run, lang):
    assert re.search(r"^Using device: (cpu|cuda)", recipe_run(NAME, lang).stdout, re.M)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_accumulated_gradient_matches_the_full_batch(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert comparisons(stdout)["accumulated == full batch"][0] is True, stdout


def comparison(found, pattern):
    """The one comparison whose description matches ``pattern``."""
    matches = [value for description, value in found.items() if re.fullmatch(pattern, description)]
    assert len(matches) == 1, f"{pattern!r} in {sorted(found)}"
    return matches[0]


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("mistake", [
    r"no division by k == full batch",
    r"sum reduction, divided by k == full batch",
    r"last window of \d+ points, divided by k == full batch",
    r"batch norm, accumulated == full batch",
])
def test_mistakes_do_not_match(recipe_run, lang, mistake):
    found = comparisons(recipe_run(NAME, lang).stdout)
    same, difference = comparison(found, mistake)
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


def optimizer_rows(stdout):
    """{optimizer: (relative difference from the divided run, from the divided run with lr x k)}."""
    return {m[1]: (float(m[2]), float(m[3])) for m in re.finditer(
        r"^(SGD, momentum=0\.9|SGD, momentum=0\.9, weight_decay=[\d.]+|Adam|AdamW, weight_decay=[\d.]+)"
        r"\s+(\S+)\s+(\S+)$", stdout, re.M)}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_no_division_is_k_times_the_learning_rate_for_sgd_only(recipe_run, lang):
    rows = optimizer_rows(recipe_run(NAME, lang).stdout)
    assert len(rows) == 4, rows
    sgd = rows["SGD, momentum=0.9"]
    assert sgd[1] < 1e-6 < 0.1 < sgd[0]  # same as lr x k, far from the intended run
    coupled = next(v for name, v in rows.items() if name.startswith("SGD, momentum=0.9, weight_decay"))
    assert min(coupled) > 1e-3  # coupled weight decay: matches neither
    for name, (divided, faster) in rows.items():
        if name.startswith("Adam"):  # nearly scale-invariant: matches the intended run, not lr x k
            assert divided < 1e-3 < 0.1 < faster, (name, divided, faster)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_no_division_changes_what_the_clipping_threshold_means(recipe_run, lang):
    match = re.search(r"^SGD with clip_grad_norm_\(max_norm=[\d.]+\): clipped (\d+) of (\d+) updates without "
                      r"division, (\d+) of \2 with it$", recipe_run(NAME, lang).stdout, re.M)
    assert match, recipe_run(NAME, lang).stdout
    without, updates, with_ = int(match[1]), int(match[2]), int(match[3])
    assert without == updates > with_


@pytest.mark.parametrize("lang", LANGUAGES)
def test_short_last_window_weighted_by_its_points(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert comparison(comparisons(stdout), r"last window of \d+ points, weighted by share == full batch")[0] is True
    match = re.search(r"^micro-batches per epoch: (\d+), k = (\d+); gradient left in \.grad after the epoch: "
                      r"norm (\S+)$", stdout, re.M)
    assert match, stdout
    micro_batches, k, left_over = int(match[1]), int(match[2]), float(match[3])
    assert micro_batches % k != 0  # the data really end with a short window
    assert left_over > 0  # the counter loop leaves its gradients for the next epoch


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
    # One update per window, the short last window of every epoch included.
    micro_batches, k = map(int, re.search(r"^micro-batches per epoch: (\d+), k = (\d+);", stdout, re.M).groups())
    windows_per_epoch = -(-micro_batches // k)
    assert runs["accumulated"][0] % windows_per_epoch == 0, runs
    difference = float(re.search(r"^max difference between the two loss histories: (\S+)$", stdout, re.M)[1])
    assert difference < 1e-4 * runs["full batch"][1], stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_draws_one_figure_with_every_glyph(recipe_run, lang):
    run = recipe_run(NAME, lang)
    assert len(run.figures) == 1
    assert "missing from font" not in run.stderr, run.stderr


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_larger_batch_makes_fewer_updates_per_epoch(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    updates = {int(m[1]): int(m[2]) for m in re.finditer(r"^batch of (\d+): (\d+) updates per epoch$", stdout, re.M)}
    assert len(updates) == 2, stdout
    small, large = sorted(updates)
    assert updates[small] > updates[large] >= 1
    assert updates[small] >= (large // small) * (updates[large] - 1)  # about large / small times as many
