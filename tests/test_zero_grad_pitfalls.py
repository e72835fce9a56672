"""The zero_grad pitfalls recipe, run in smoke mode: does it show what it claims to show?"""

import re

import pytest

from conftest import LANGUAGES

NAME = "zero_grad_pitfalls"


def number(pattern, stdout):
    """The float captured by ``pattern`` in the output (it must be there)."""
    match = re.search(pattern, stdout, re.M)
    assert match, f"{pattern!r} not in the output:\n{stdout}"
    return float(match[1])


@pytest.mark.parametrize("lang", LANGUAGES)
def test_says_which_device_it_uses(recipe_run, lang):
    assert re.search(r"^Using device: (cpu|cuda)", recipe_run(NAME, lang).stdout, re.M)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_start_of_loop_and_after_step_are_identical(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert number(r"^start of the loop vs after step\(\), max abs weight difference: (\S+)$", stdout) == 0
    before = number(r"^loss before training: (\S+)$", stdout)
    start = number(r"^loss after \d+ steps, zero_grad\(\) start of the loop: (\S+)$", stdout)
    after = number(r"^loss after \d+ steps, zero_grad\(\) after step\(\): (\S+)$", stdout)
    assert start == after < before


@pytest.mark.parametrize("lang", LANGUAGES)
def test_zeroing_between_backward_and_step_leaves_weights_unchanged(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert number(r"^zero_grad\(\) between backward\(\) and step\(\), weights changed: False "
                  r"\(max abs difference from the initial weights (\S+)\)$", stdout) == 0
    before = number(r"^loss before training: (\S+)$", stdout)
    assert number(r"^loss after \d+ steps, zero_grad\(\) between backward\(\) and step\(\): (\S+)$", stdout) == before


@pytest.mark.parametrize("lang", LANGUAGES)
def test_optimizer_zero_grad_lets_other_gradients_grow(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    norms = {m[1]: (float(m[2]), float(m[3])) for m in re.finditer(
        r"^(optimizer|model)\.zero_grad\(\): first layer \.grad norm after step 1: (\S+), after step \d+: (\S+)$",
        stdout, re.M)}
    assert set(norms) == {"optimizer", "model"}, stdout
    assert norms["optimizer"][0] == norms["model"][0]  # same start
    assert norms["optimizer"][1] > 2 * norms["model"][1]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_discriminator_leaves_a_stale_gradient_in_the_generator(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    stale = number(r"^generator \.grad left by the discriminator's backward\(\): norm (\S+)$", stdout)
    own = number(r"^generator's own gradient: norm (\S+),", stdout)
    cosine = number(r"^generator's own gradient: .*cosine similarity with the stale one: (\S+)$", stdout)
    mixed = number(r"^gradient the generator's step uses without zeroing first: norm (\S+),", stdout)
    difference = number(r"^gradient the generator's step uses without zeroing first: .*"
                        r"max abs difference from its own: (\S+),", stdout)
    assert stale > 0 and difference > 0
    # The stale gradient opposes the generator's own, so adding it shrinks the gradient.
    assert cosine < 0
    assert mixed < own


def first_step(stdout, optimizer):
    """(norm ratio, cosine similarity, elements moved the wrong way, elements) of the step without zeroing."""
    match = re.search(rf"^generator's first step, {re.escape(optimizer)}\(lr=[\de.-]+\), without zeroing vs "
                      r"zeroed: norm ratio (\S+), cosine similarity (\S+), elements moved the wrong way: "
                      r"(\d+) of (\d+)$", stdout, re.M)
    assert match, stdout
    return float(match[1]), float(match[2]), int(match[3]), int(match[4])


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_stale_gradient_shrinks_an_sgd_step_and_turns_an_adam_step(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    own = number(r"^generator's own gradient: norm (\S+),", stdout)
    mixed = number(r"^gradient the generator's step uses without zeroing first: norm (\S+),", stdout)
    mixed_cosine = number(r"^gradient the generator's step uses without zeroing first: .*"
                          r"cosine similarity with its own: (\S+)$", stdout)
    sgd, adam = first_step(stdout, "SGD"), first_step(stdout, "Adam")
    # SGD's step is proportional to the gradient: as much shorter, the same direction.
    assert sgd[0] == pytest.approx(mixed / own, abs=0.01) and sgd[0] < 0.5
    assert sgd[1] == pytest.approx(mixed_cosine, abs=0.002)
    # Adam's first step is lr * sign(gradient): as long as the right one, turned where signs flipped.
    assert adam[0] == pytest.approx(1, abs=0.01)
    assert 0 < adam[2] < adam[3] and adam[1] < 0.999
    assert adam[2] == sgd[2]  # the same elements change sign under both optimizers


@pytest.mark.parametrize("lang", LANGUAGES)
def test_zero_gradients_move_idle_weights_and_none_does_not(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    rows = {(m[1], m[2]): float(m[3]) for m in
            re.finditer(r"^(SGD, momentum=0\.9|SGD, weight_decay=0\.1|Adam)\s+(zeros|None)\s+(\S+)$", stdout, re.M)}
    assert len(rows) == 6, stdout
    for optimizer in ("SGD, momentum=0.9", "SGD, weight_decay=0.1", "Adam"):
        assert rows[optimizer, "zeros"] > 0
        assert rows[optimizer, "None"] == 0


@pytest.mark.parametrize("lang", LANGUAGES)
def test_inference_without_autograd_saves_nothing_for_backward(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert re.search(r"^after mlp\.zero_grad\(\): output\.requires_grad=True, output\.grad_fn=\w+$", stdout, re.M)
    rows = {m[1]: (float(m[2]), float(m[3])) for m in re.finditer(
        r"^(plain|torch\.no_grad\(\)|torch\.inference_mode\(\))\s+(\S+) MiB\s+(\S+) ms", stdout, re.M)}
    assert len(rows) == 3, stdout
    assert rows["plain"][0] > 0
    assert rows["torch.no_grad()"][0] == rows["torch.inference_mode()"][0] == 0
    assert all(seconds > 0 for _, seconds in rows.values())


@pytest.mark.parametrize("lang", LANGUAGES)
def test_set_to_none_is_timed_and_cheaper(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    zeros = number(r"^zero_grad\(set_to_none=False\)\s+(\S+) us per call$", stdout)
    foreach = number(r"^zero_grad\(set_to_none=False\), foreach=True\s+(\S+) us per call$", stdout)
    none = number(r"^zero_grad\(set_to_none=True\)\s+(\S+) us per call$", stdout)
    assert zeros > 0 and foreach > 0 and none > 0
    assert zeros > none and foreach > none
    assert number(r"^set_to_none=False takes (\S+)x as long as set_to_none=True$", stdout) == \
        pytest.approx(zeros / none, rel=0.05)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_draws_one_figure_with_every_glyph(recipe_run, lang):
    run = recipe_run(NAME, lang)
    assert len(run.figures) == 1
    assert "missing from font" not in run.stderr, run.stderr


@pytest.mark.parametrize("lang", LANGUAGES)
def test_page_output_has_no_cuda_compiler_warning(recipe_run, lang):
    """Sphinx-Gallery shows stderr on the page; importing torch.utils.benchmark must stay quiet."""
    assert "cpp_extension" not in recipe_run(NAME, lang).stderr


@pytest.mark.parametrize("lang", LANGUAGES)
def test_lbfgs_needs_zero_grad_inside_its_closure(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    runs = {m[1]: (float(m[2]), int(m[3])) for m in re.finditer(
        r"^LBFGS, zero_grad\(\) (inside the closure|once per step\(\)): loss after \d+ steps (\S+), "
        r"closure calls (\d+)$", stdout, re.M)}
    assert set(runs) == {"inside the closure", "once per step()"}, stdout
    before = number(r"^loss before training: (\S+)$", stdout)
    inside, outside = runs["inside the closure"], runs["once per step()"]
    assert inside[0] < 0.1 * before  # converges
    assert outside[0] > before  # the stale sums drive it away
    assert outside[1] > inside[1]  # and use up more evaluations


@pytest.mark.parametrize("lang", LANGUAGES)
def test_neither_zero_grad_clears_a_retained_non_leaf_gradient(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    match = re.search(r"^non-leaf hidden\.grad norm after one backward\(\): (\S+), after two: (\S+), "
                      r"after optimizer\.zero_grad\(\) and model\.zero_grad\(\): (\S+)$", stdout, re.M)
    assert match, stdout
    one, two, after = map(float, match.groups())
    assert one > 0
    assert two == pytest.approx(2 * one, rel=1e-3)
    assert after == two


@pytest.mark.parametrize("lang", LANGUAGES)
def test_lbfgs_moves_a_parameter_whose_grad_is_none(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert abs(number(r"^LBFGS, a step in which idle\.grad is None: idle moved by (\S+)$", stdout)) > 1e-3
