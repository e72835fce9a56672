"""The accumulation-in-practice recipe, run in smoke mode: does it show what it claims to show?"""

import re

import pytest

from conftest import LANGUAGES, comparisons

NAME = "accumulation_in_practice"
SCHEDULE = re.compile(r"^(scheduler\.step\(\) every (?:update|micro-batch)): peak learning rate at update (\d+), "
                      r"learning rate 0 from update (\d+|never) of (\d+)$", re.M)
MEMORY = re.compile(r"^(total_loss \+= .+?): saved tensors (\d+) KiB at the peak, (\d+) KiB after the window; "
                    r"graph nodes held by total_loss: ([\d, ]+)$", re.M)


def number(pattern, stdout):
    """The number captured by ``pattern`` in a printed line."""
    match = re.search(pattern, stdout, re.M)
    assert match, f"no line matches {pattern!r}\n{stdout}"
    return float(match[1])


@pytest.mark.parametrize("lang", LANGUAGES)
def test_says_which_device_and_autocast_dtype_it_uses(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    device = re.search(r"^Using device: (cpu|cuda)", stdout, re.M)
    dtype = re.search(r"^Autocast dtype: torch\.(float16|bfloat16)$", stdout, re.M)
    assert device and dtype, stdout
    assert dtype[1] == {"cuda": "float16", "cpu": "bfloat16"}[device[1]]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_grad_scaler_scales_until_unscale(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert re.search(r"^GradScaler enabled: True$", stdout, re.M), stdout
    scaled = number(r"^gradient norm before unscale_: (\S+) \(scale \d+\)$", stdout)
    scale = number(r"^gradient norm before unscale_: \S+ \(scale (\d+)\)$", stdout)
    unscaled = number(r"^gradient norm after unscale_: (\S+)$", stdout)
    assert scale > 1
    assert scaled / unscaled == pytest.approx(scale, rel=1e-3)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_mixed_precision_gradient_is_close_to_float32_but_not_exact(recipe_run, lang):
    error = number(r"^mixed precision vs float32 gradient: relative error (\S+)$", recipe_run(NAME, lang).stdout)
    assert 0 < error < 0.01


@pytest.mark.parametrize("lang", LANGUAGES)
def test_scaling_changes_no_bit_in_bfloat16(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    same = re.search(r"^same gradient as with a disabled scaler, bit for bit: (True|False)$", stdout, re.M)
    assert same, stdout
    if "Autocast dtype: torch.bfloat16" in stdout:
        assert same[1] == "True"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_unscaling_every_micro_batch_raises_on_the_second(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    match = re.search(r"^unscale_ on every micro-batch: micro-batch (\d+) raised RuntimeError: (.+)$", stdout, re.M)
    assert match, stdout
    assert match[1] == "2"
    assert match[2].startswith("unscale_() has already been called on this optimizer"), match[2]
    assert "Traceback" not in stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_clipping_once_is_right_and_every_micro_batch_is_wrong(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    found = comparisons(stdout)
    summed_norm = number(r"^summed gradient norm: (\S+) \(max_norm \S+\)$", stdout)
    max_norm = number(r"^summed gradient norm: \S+ \(max_norm (\S+)\)$", stdout)
    assert summed_norm > max_norm, "clipping must be active for the comparison to mean anything"
    assert found["clipped once == summed gradient clipped"][0] is True, found
    same, difference = found["clipped every micro-batch == summed gradient clipped"]
    assert same is False
    assert difference > 100 * found["clipped once == summed gradient clipped"][1]
    assert number(r"^clipped every micro-batch: relative error (\S+)%", stdout) > 1
    # Same length, different direction.
    assert number(r"^clipped every micro-batch: .*, norm (\S+)$", stdout) == pytest.approx(max_norm, rel=1e-3)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_clipping_before_unscale_divides_the_gradient_by_the_scale(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    match = re.search(r"^clipped before unscale_: gradient norm (\S+) instead of (\S+) \(scale (\d+)\)$", stdout, re.M)
    assert match, stdout
    norm, max_norm, scale = map(float, match.groups())
    assert scale > 1
    assert norm == pytest.approx(max_norm / scale, rel=1e-2)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_scheduler_stepped_every_micro_batch_runs_too_fast(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    schedules = {m[1]: m for m in SCHEDULE.finditer(stdout)}
    right = schedules["scheduler.step() every update"]
    wrong = schedules["scheduler.step() every micro-batch"]
    assert right[4] == wrong[4]
    updates = int(right[4])
    assert right[3] == "never"  # the right schedule reaches 0 only after the last update
    assert int(wrong[2]) < int(right[2])  # warm-up over too soon
    assert int(wrong[3]) < updates / 2  # learning rate 0 for most of the training
    # The one warning of the schedules comes from the wrong one, printed just before its line.
    warned = re.search(r"^  PyTorch warned: (.+)\n(.+)$", stdout, re.M)
    assert warned, stdout
    assert warned[1] == "Detected call of `lr_scheduler.step()` before `optimizer.step()`."
    assert warned[2].startswith("scheduler.step() every micro-batch: "), warned[2]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_clipping_before_unscale_hardly_shortens_an_adamw_step(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    adamw = number(r"^AdamW: step length clipped before unscale_ / clipped after: (\S+)$", stdout)
    sgd = number(r"^SGD: step length clipped before unscale_ / clipped after: (\S+)$", stdout)
    scale = number(r"^clipped before unscale_: .*\(scale (\d+)\)$", stdout)
    assert 0.1 < adamw <= 1.0  # the same order of size
    assert 0 < sgd <= 1.01 / scale  # shrunk by the scale, or more (rounding of the weights)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_skipped_step_still_advances_the_scheduler(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    match = re.search(r"^update with an overflow: weights changed: (True|False), scale (\d+) -> (\d+), "
                      r"learning rate (\S+) -> (\S+)\n  PyTorch warned: (.+)$", stdout, re.M)
    assert match, stdout
    changed, scale_before, scale_after, lr_before, lr_after, warning = match.groups()
    assert changed == "False"  # GradScaler skipped optimizer.step()
    assert int(scale_after) == int(scale_before) // 2
    assert float(lr_after) > float(lr_before)  # ... but the warm-up moved on
    assert warning == "Detected call of `lr_scheduler.step()` before `optimizer.step()`."


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_checkpoint_in_the_middle_of_a_window_loses_its_gradient(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    assert re.search(r"^in the checkpoint, per parameter: the weights, and \['exp_avg', 'exp_avg_sq', 'step'\]$",
                     stdout, re.M), stdout
    same, difference = comparisons(stdout)["resumed in the middle of the window == whole window"]
    assert same is False and difference > 1e-4, stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_token_weighting_matches_the_full_batch(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    found = comparisons(stdout)
    counts = re.search(r"^real tokens per micro-batch: \[([\d, ]+)\]$", stdout, re.M)
    assert counts and len(set(counts[1].split(", "))) > 1, "the micro-batches must hold different numbers of tokens"
    assert found["token sum / window tokens == full batch"][0] is True, found
    same, difference = found["micro-batch mean / k == full batch"]
    assert same is False
    assert difference > 100 * found["token sum / window tokens == full batch"][1]
    assert number(r"^micro-batch mean / k: relative error (\S+)%$", stdout) > 1
    assert number(r"^token sum / window tokens: relative error (\S+)$", stdout) < 1e-5


@pytest.mark.parametrize("lang", LANGUAGES)
def test_last_window_is_scaled_by_what_it_holds(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    held, k = map(int, re.search(r"^last window: (\d+) micro-batches, k = (\d+)$", stdout, re.M).groups())
    assert 0 < held < k
    ratio = number(r"^last window, loss / k vs loss / len\(window\): gradient norm ratio (\S+)$", stdout)
    assert ratio == pytest.approx(held / k, rel=1e-3)
    assert comparisons(stdout)["last window, token sum / window tokens == full batch"][0] is True


@pytest.mark.parametrize("lang", LANGUAGES)
def test_logging_the_loss_tensor_keeps_the_graph(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    runs = {m[1]: (int(m[2]), int(m[3]), [int(n) for n in m[4].split(", ")]) for m in MEMORY.finditer(stdout)}
    assert len(runs) == 4, stdout
    item, detach = runs["total_loss += loss.item()"], runs["total_loss += loss.detach()"]
    tensor, backward_once = runs["total_loss += loss"], runs["total_loss += loss, one backward() on the sum"]
    for peak, kept, nodes in (item, detach):
        assert peak > 0 and kept == 0 and set(nodes) == {0}
    # The tensor holds more graph nodes after every micro-batch; backward() had freed what they saved.
    peak, kept, nodes = tensor
    assert len(nodes) > 1 and all(a < b for a, b in zip(nodes, nodes[1:])) and nodes[0] > 0, nodes
    assert kept == 0 and peak == item[0]
    # One backward on the sum holds every micro-batch's saved tensors at once.
    assert backward_once[0] > 2 * item[0] and backward_once[1] == 0


@pytest.mark.parametrize("lang", LANGUAGES)
def test_training_with_the_fast_schedule_stops_learning(recipe_run, lang):
    stdout = recipe_run(NAME, lang).stdout
    runs = {m[1]: (int(m[2]), float(m[3]), float(m[4])) for m in re.finditer(
        r"^(scheduler\.step\(\) every (?:update|micro-batch)): (\d+) updates, loss (\S+) -> (\S+)$", stdout, re.M)}
    right, wrong = runs["scheduler.step() every update"], runs["scheduler.step() every micro-batch"]
    assert right[0] == wrong[0] > 1
    assert right[1] == wrong[1]  # same initial weights
    assert right[2] < right[1] and right[2] < wrong[2]
    frozen = dict(re.findall(r"^(scheduler\.step\(\) every (?:update|micro-batch)): "
                             r"the last epoch's losses repeat the epoch before: (True|False)$", stdout, re.M))
    assert frozen == {"scheduler.step() every update": "False", "scheduler.step() every micro-batch": "True"}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_draws_two_figures_with_every_glyph(recipe_run, lang):
    run = recipe_run(NAME, lang)
    assert len(run.figures) == 2
    assert "missing from font" not in run.stderr, run.stderr
