"""The linear-regression recipe, run in smoke mode: does it show what it claims to show?"""

import re

import pytest

from conftest import LANGUAGES

NAME = "linear_regression_without_zero_grad"
NUMBER = r"(-?[\d.]+(?:e[+-]?\d+)?)"


def gradients(stdout):
    """{("zeroed" | "not zeroed", iteration): (w.grad, b.grad)} of the first two iterations."""
    pattern = rf"^(zeroed|not zeroed), iteration (\d): w\.grad = +{NUMBER}, b\.grad = +{NUMBER}$"
    found = {(m[1], int(m[2])): (float(m[3]), float(m[4])) for m in re.finditer(pattern, stdout, re.M)}
    assert len(found) == 4, f"expected the gradients of two iterations, twice:\n{stdout}"
    return found


def runs(stdout):
    """The reports of the training runs, in order: (name, iterations, final loss, w, b)."""
    pattern = (rf"^(zeroed|not zeroed) +iterations: +(\d+), final loss: +{NUMBER}, "
               rf"w = +{NUMBER}, b = +{NUMBER}$")
    found = [(m[1], int(m[2]), float(m[3]), float(m[4]), float(m[5])) for m in re.finditer(pattern, stdout, re.M)]
    assert [r[0] for r in found] == ["zeroed", "not zeroed"] * 2, stdout
    return found


def line(stdout, name):
    match = re.search(rf"^{name} line: +w = {NUMBER}, b = {NUMBER}, loss = {NUMBER}$", stdout, re.M)
    assert match, stdout
    return tuple(float(v) for v in match.groups())


@pytest.mark.parametrize("lang", LANGUAGES)
def test_says_which_device_it_uses(recipe_run, lang):
    assert re.search(r"^Using device: cpu$", recipe_run(NAME, lang).stdout, re.M)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_second_gradient_is_the_sum_without_zeroing(recipe_run, lang):
    grads = gradients(recipe_run(NAME, lang).stdout)
    assert grads["zeroed", 1] == grads["not zeroed", 1]
    assert grads["zeroed", 2] != grads["not zeroed", 2]
    for i in range(2):  # w.grad, b.grad: the values are printed to 4 decimals
        total = grads["zeroed", 1][i] + grads["zeroed", 2][i]
        assert grads["not zeroed", 2][i] == pytest.approx(total, abs=2e-4)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_runs_with_a_stopping_rule_reach_loss_below_one(recipe_run, lang):
    stopped = runs(recipe_run(NAME, lang).stdout)[:2]
    for name, iterations, loss, _, _ in stopped:
        assert iterations < 1000 and loss < 1, (name, stopped)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_only_the_zeroed_run_settles(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    _, _, (_, n_with, loss_with, w_with, b_with), (_, n_without, loss_without, _, _) = runs(stdout)
    _, _, best_loss = line(stdout, "least-squares")
    _, _, initial_loss = line(stdout, "initial")
    assert n_with == n_without == 1000
    spans = re.findall(rf"iterations with loss < 1: (\d+) of 1000, loss over the last 100: {NUMBER} to {NUMBER}$",
                       stdout, re.M)
    assert len(spans) == 2, stdout
    (below_with, low_with, high_with), (below_without, low_without, high_without) = \
        [(int(n), float(lo), float(hi)) for n, lo, hi in spans]
    # Zeroed: settles just above the least-squares loss and stays below 1 once there.
    assert best_loss <= loss_with < 1
    assert high_with < 1 and low_with == loss_with  # still falling at the end
    # Not zeroed: still swinging from near the minimum to about the initial loss.
    assert low_without < 1.5 and high_without > 0.5 * initial_loss
    assert below_without < below_with / 10
    assert loss_without > 10 * loss_with


@pytest.mark.parametrize("lang", LANGUAGES)
def test_never_zeroing_equals_momentum_one(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    match = re.search(rf"^largest difference from the never-zeroed loss curve: {NUMBER}, "
                      rf"on losses up to {NUMBER}$", stdout, re.M)
    assert match, stdout
    difference, largest_loss = float(match[1]), float(match[2])
    assert difference < 1e-4 * largest_loss  # rounding, against losses that swing far above the minimum


@pytest.mark.parametrize("lang", LANGUAGES)
def test_nn_linear_with_zero_grad_finds_the_line(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    pattern = (rf"^nn\.Linear, (\d+) iterations (with|without) zero_grad\(\): +"
               rf"weight = {NUMBER}, bias = {NUMBER}, loss = {NUMBER}$")
    fits = {m[2]: (float(m[3]), float(m[4]), float(m[5])) for m in re.finditer(pattern, stdout, re.M)}
    assert set(fits) == {"with", "without"}, stdout
    weight, bias, loss = fits["with"]
    assert weight == pytest.approx(2, abs=0.01) and bias == pytest.approx(0, abs=0.01)
    weight, bias, loss_without = fits["without"]
    assert abs(weight - 2) > 0.1 or abs(bias) > 0.1
    assert loss_without > 1000 * loss


@pytest.mark.parametrize("lang", LANGUAGES)
def test_momentum_with_friction_settles(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    match = re.search(rf"^momentum 0\.9, zeroed: loss over the last 100: {NUMBER} to {NUMBER}$", stdout, re.M)
    assert match, stdout
    _, _, best_loss = line(stdout, "least-squares")
    assert float(match[1]) == pytest.approx(best_loss, abs=1e-3)
    assert float(match[2]) == pytest.approx(best_loss, abs=1e-3)


def largest_per_quarter(stdout):
    """{run name: [largest loss of each quarter of the 1,000 iterations]}."""
    found = {m[1]: [float(v) for v in m[2].split(", ")] for m in
             re.finditer(r"^(.+?) +largest loss per 250 iterations: (.*)$", stdout, re.M)}
    assert set(found) == {"all 20 points, not zeroed", "mini-batches, zeroed", "mini-batches, not zeroed"}, stdout
    assert all(len(v) == 4 for v in found.values()), found
    return found


@pytest.mark.parametrize("lang", LANGUAGES)
def test_never_zeroed_swings_stay_bounded_on_all_points_and_grow_on_mini_batches(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    quarters = largest_per_quarter(stdout)
    _, _, initial_loss = line(stdout, "initial")
    full = quarters["all 20 points, not zeroed"]
    assert max(full) < 1.2 * initial_loss and max(full) < 1.01 * min(full), full
    batches = quarters["mini-batches, not zeroed"]
    assert batches[-1] > 100 * batches[0] and batches[0] > max(full), batches


@pytest.mark.parametrize("lang", LANGUAGES)
def test_zeroed_mini_batches_settle_near_the_minimum(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    match = re.search(rf"^mini-batches, zeroed +loss over the last 100: {NUMBER} to {NUMBER}$", stdout, re.M)
    assert match, stdout
    _, _, best_loss = line(stdout, "least-squares")
    assert best_loss <= float(match[1]) <= float(match[2]) < 1.5 * best_loss
    assert largest_per_quarter(stdout)["mini-batches, zeroed"][-1] < 1.5 * best_loss


@pytest.mark.parametrize("lang", LANGUAGES)
def test_two_figures_without_missing_glyphs(recipe_run, lang):
    run = recipe_run(NAME, lang)
    assert len(run.figures) == 2
    assert "missing from font" not in run.stderr, run.stderr
