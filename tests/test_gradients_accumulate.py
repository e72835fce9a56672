"""The mechanics recipe, run in smoke mode: does .grad add up the way it says?"""

import re

import pytest

from conftest import LANGUAGES

NAME = "gradients_accumulate"


def printed(stdout, label):
    """The text printed after ``label: `` on its own line."""
    match = re.search(rf"^{re.escape(label)}: (.*)$", stdout, re.M)
    assert match, f"no line starting with {label!r}:\n{stdout}"
    return match[1]


def values(stdout, label):
    """The numbers of a tensor printed after ``label: ``, e.g. ``tensor([100., 100.])``."""
    text = printed(stdout, label)
    match = re.match(r"tensor\(\[([^\]]*)\]", text)
    assert match, f"{label}: expected a tensor, got {text!r}"
    return [float(v) for v in match[1].split(",")]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_says_which_device_it_uses(recipe_run, lang):
    assert re.search(r"^Using device: (cpu|cuda)", recipe_run(NAME, lang).stdout, re.M)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_grad_is_none_until_the_first_backward(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert printed(stdout, "x.grad before backward") == "None"
    first = values(stdout, "x.grad after first backward")
    assert first == [100.0, 100.0]  # d(100 x1 + 100 x2)/dx, the recipe's stated example


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_step_moves_x_by_lr_times_grad(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    before = values(stdout, "x")
    grad = values(stdout, "x.grad after first backward")
    lr_line = re.search(r"^x after optimizer\.step\(\) \(lr=([\d.e-]+)\): ", stdout, re.M)
    assert lr_line, stdout
    lr = float(lr_line[1])
    after = values(stdout, f"x after optimizer.step() (lr={lr_line[1]})")
    assert after == pytest.approx([x - lr * g for x, g in zip(before, grad)], abs=1e-4)
    assert after != before


@pytest.mark.parametrize("lang", LANGUAGES)
def test_without_zeroing_the_gradients_add_up(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    first = values(stdout, "x.grad after first backward")
    accumulated = values(stdout, "x.grad after second backward, not zeroed")
    fresh = values(stdout, "x.grad after zero_grad() and backward")
    assert fresh == first  # the loss is linear, so its gradient is the same at every x
    assert accumulated == [2 * g for g in fresh]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_zero_grad_sets_none_or_zeros(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert printed(stdout, "x.grad after optimizer.zero_grad()") == "None"
    assert values(stdout, "x.grad after zero_grad(set_to_none=False)") == [0.0, 0.0]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_second_backward_needs_retain_graph(recipe_run, lang):
    error = printed(recipe_run(NAME, lang).stdout, "second backward on the same graph")
    assert error.startswith("RuntimeError: Trying to backward through the graph a second time"), error


@pytest.mark.parametrize("lang", LANGUAGES)
def test_two_losses_summed_or_retained_add_up_alike(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    fresh = values(stdout, "x.grad after zero_grad() and backward")  # the gradient of first = (100 x).sum()
    retained = values(stdout, "x.grad after first.backward(retain_graph=True), second.backward()")
    summed = values(stdout, "x.grad after (first + second).backward()")
    assert retained == summed == [1.5 * g for g in fresh]  # second = first / 2: the gradients add up
    # The sum goes back through the shared part once, the two calls twice.
    assert int(printed(stdout, "backward passes through y, one after the other")) == 2
    assert int(printed(stdout, "backward passes through y, summed")) == 1


@pytest.mark.parametrize("lang", LANGUAGES)
def test_grad_grows_linearly_without_zeroing_on_one_figure(recipe_run, lang):
    run = recipe_run(NAME, lang)
    without = [float(v) for v in printed(run.stdout, "x.grad[0] after each backward, without zero_grad()").split(",")]
    with_ = [float(v) for v in printed(run.stdout, "x.grad[0] after each backward, with zero_grad()").split(",")]
    assert len(without) == len(with_) >= 3
    assert with_ == [with_[0]] * len(with_)
    assert without == [n * with_[0] for n in range(1, len(without) + 1)]
    assert len(run.figures) == 1
    assert "missing from font" not in run.stderr, run.stderr


@pytest.mark.parametrize("lang", LANGUAGES)
def test_second_backward_without_saved_tensors_adds_again_silently(recipe_run, lang):
    assert values(recipe_run(NAME, lang).stdout, "x.grad after two backward() calls on (x + 1).sum()") == [2.0, 2.0]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_gradients_without_accumulating_into_grad(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    fresh = values(stdout, "x.grad after zero_grad() and backward")
    assert values(stdout, "torch.autograd.grad, called twice, returns") == fresh
    assert values(stdout, "x.grad after the two torch.autograd.grad calls") == fresh  # not 3 x fresh
    match = re.search(r"^after loss\.backward\(inputs=\[z\]\): z\.grad = tensor\(\[(\S+)\]\), x\.grad = (\S+)$",
                      stdout, re.M)
    assert match, stdout
    assert float(match[1]) == 10.0 and match[2] == "None"
