"""The low-precision-accumulation recipe, run in smoke mode: does it show what it claims to show?"""

import re

import pytest

from conftest import LANGUAGES

NAME = "low_precision_accumulation"
SPIKE = re.compile(r"^(skip on (?:the first|a later) update), spiked update (\d+): "
                   r"parameters bit-identical to before: (True|False)\n"
                   r"  scale (\d+) -> (\d+); AdamW step count (\d+) -> (\d+); scheduler position (\d+)\n"
                   r"  scheduler warning raised: (True|False)$", re.M)
SCHEDULE = re.compile(r"^(scheduler\.step\(\) (?:every update|only after a real step)): "
                      r"skipped updates \[([\d, ]*)\], (\d+) steps taken\n"
                      r"  learning rates of the steps taken: (.+)\n"
                      r"  the schedule's first \d+ values: (.+)\n"
                      r"  steps taken at the intended learning rates: (True|False)$", re.M)
ERROR = re.compile(r"^k = +(\d+): relative error, bfloat16 \.grad (\S+), float32 buffer (\S+)$", re.M)
TRAINING = re.compile(r"^(bfloat16 \.grad|float32 buffer|float64 buffer): (\d+) updates of k = \d+, "
                      r"window loss (\S+) -> (\S+), final loss over all sequences (\S+)$", re.M)


def stdout_of(recipe_run, lang):
    return recipe_run(NAME, lang).stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_says_which_device_and_dtype_it_uses(recipe_run, lang):
    stdout = stdout_of(recipe_run, lang)
    assert re.search(r"^Using device: (cpu|cuda)", stdout, re.M), stdout
    assert re.search(r"^Autocast dtype: torch\.float16$", stdout, re.M), stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_spiked_window_is_skipped_whole(recipe_run, lang):
    spikes = {m[1]: m for m in SPIKE.finditer(stdout_of(recipe_run, lang))}
    assert set(spikes) == {"skip on the first update", "skip on a later update"}, spikes
    for spike in spikes.values():
        update, unchanged, scale_before, scale_after, steps_before, steps_after, position = (
            int(spike[2]), spike[3], int(spike[4]), int(spike[5]), int(spike[6]), int(spike[7]), int(spike[8]))
        assert unchanged == "True"
        assert scale_after == scale_before // 2
        assert steps_after == steps_before == update - 1  # the updates before it were taken, this one not
        assert position == steps_after + 1  # the scheduler, stepped anyway, is one update ahead
    assert int(spikes["skip on a later update"][2]) > 1


@pytest.mark.parametrize("lang", LANGUAGES)
def test_pytorch_warns_only_when_the_first_update_is_skipped(recipe_run, lang):
    stdout = stdout_of(recipe_run, lang)
    spikes = {m[1]: m[9] for m in SPIKE.finditer(stdout)}
    assert spikes == {"skip on the first update": "True", "skip on a later update": "False"}, spikes
    assert "Warning" not in stdout and "warn(" not in stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_detecting_skips_keeps_the_schedule_in_line(recipe_run, lang):
    runs = {m[1]: m for m in SCHEDULE.finditer(stdout_of(recipe_run, lang))}
    naive, fixed = runs["scheduler.step() every update"], runs["scheduler.step() only after a real step"]
    assert naive[2] == fixed[2] == "1, 4" and naive[3] == fixed[3]
    assert fixed[4] == fixed[5] and fixed[6] == "True"
    assert naive[4] != naive[5] and naive[6] == "False"
    assert naive[4].split(", ")[0] == fixed[4].split(", ")[1]  # the first step taken used the second rate


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_larger_initial_scale_costs_updates(recipe_run, lang):
    stdout = stdout_of(recipe_run, lang)
    largest = int(re.search(r"^largest scale with finite gradients on the first window: 2\*\*(\d+)$", stdout, re.M)[1])
    skipped = {int(m[1]): m[2] for m in re.finditer(r"^initial scale 2\*\*(\d+): skipped updates \[([\d, ]*)\] of \d+$",
                                                     stdout, re.M)}
    assert set(skipped) == {16, 24}, skipped
    assert largest < 24
    # From 2**24, the first update overflows and is skipped; the default scale skips fewer updates.
    from_24 = [int(n) for n in skipped[24].split(", ")]
    from_16 = [int(n) for n in skipped[16].split(", ") if n]
    assert from_24[0] == 1, skipped
    assert len(from_16) < len(from_24), skipped
    if largest >= 16:
        assert 1 not in from_16, skipped


@pytest.mark.parametrize("lang", LANGUAGES)
def test_float16_rounds_small_gradients_to_zero_without_the_scale(recipe_run, lang):
    stdout = stdout_of(recipe_run, lang)
    found = {(m[1], float(m[2])): (float(m[3]), float(m[4])) for m in re.finditer(
        r"^(initial|trained) weights, float16, scale (\d+): (\S+)% zero, (\S+)% below 2\*\*-14$", stdout, re.M)}
    float32 = re.findall(r"^(?:initial|trained) weights, float32: (\S+)% of the logits' gradient zero$", stdout, re.M)
    assert float32 == ["0.00", "0.00"], float32
    assert len(found) == 4, found
    for weights in ("initial", "trained"):
        assert found[(weights, 1.0)][1] > 50  # most of the unscaled gradient is below float16's normal range
        assert found[(weights, 65536.0)] == (0.0, 0.0)
    assert found[("trained", 1.0)][0] > 0  # once trained, some of it rounds to zero


@pytest.mark.parametrize("lang", LANGUAGES)
def test_summing_in_bfloat16_loses_more_as_k_grows(recipe_run, lang):
    stdout = stdout_of(recipe_run, lang)
    rows = [(int(m[1]), float(m[2]), float(m[3])) for m in ERROR.finditer(stdout)]
    ks = [k for k, _, _ in rows]
    assert ks[0] == 1 and ks[-1] >= 64, ks
    bfloat16 = [error for _, error, _ in rows]
    float32 = [error for _, _, error in rows]
    assert bfloat16[0] == float32[0] == 0.0  # one gradient: nothing added
    assert all(a < b for a, b in zip(bfloat16[1:], bfloat16[2:])), bfloat16  # grows with k
    assert bfloat16[-1] > 3 * bfloat16[1]
    eps = float(re.search(r"^torch\.float32: eps \(spacing next to 1\) 2\*\*-23 = (\S+)$", stdout, re.M)[1])
    assert all(error < eps for error in float32), float32  # stays at float32 rounding
    assert all(b > 100 * f for b, f in zip(bfloat16[1:], float32[1:]))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_short_training_runs_end_close(recipe_run, lang):
    stdout = stdout_of(recipe_run, lang)
    runs = {m[1]: (int(m[2]), float(m[3]), float(m[4]), float(m[5])) for m in TRAINING.finditer(stdout)}
    assert set(runs) == {"bfloat16 .grad", "float32 buffer", "float64 buffer"}, runs
    assert len({run[:2] for run in runs.values()}) == 1  # same updates, same first loss
    for updates, first, last, _final in runs.values():
        assert updates > 1 and last < first
    bfloat16, float32 = runs["bfloat16 .grad"][3], runs["float32 buffer"][3]
    assert abs(bfloat16 - float32) < 0.02 * float32  # "hard to tell apart"
    assert re.search(r"^float32 buffer and float64 buffer, same loss at every update: (True|False)$", stdout, re.M)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_buffer_costs_four_bytes_per_parameter(recipe_run, lang):
    match = re.search(r"^(\d+) parameters: bfloat16 \.grad (\d+) bytes, float32 buffer (\d+) bytes "
                      r"\((\d+) bytes per parameter, (\d+) x \.grad\)$", stdout_of(recipe_run, lang), re.M)
    assert match, stdout_of(recipe_run, lang)
    parameters, grad, buffer = int(match[1]), int(match[2]), int(match[3])
    assert grad == 2 * parameters and buffer == 4 * parameters


@pytest.mark.parametrize("lang", LANGUAGES)
def test_draws_two_figures_with_every_glyph(recipe_run, lang):
    run = recipe_run(NAME, lang)
    assert len(run.figures) == 2
    assert "missing from font" not in run.stderr, run.stderr


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_bfloat16_run_stays_closer_than_the_loss_moves(recipe_run, lang):
    match = re.search(r"^largest loss difference from the float64 buffer's run: bfloat16 \.grad (\S+), "
                      r"float32 buffer (\S+); largest change of the loss from one update to the next: (\S+)$",
                      stdout_of(recipe_run, lang), re.M)
    assert match, stdout_of(recipe_run, lang)
    bfloat16, float32, change = map(float, match.groups())
    assert change > 0
    assert bfloat16 < change / 10 and float32 < change / 10
