"""The flagship recipe, run in smoke mode: does it show what it claims to show?"""

import math
import re

import pytest

from conftest import LANGUAGES

ROW = re.compile(r"^(with|without) zero_grad\(\)\s+([\d,]+)\s+(\S+)\s+([\d.]+)%\s+([\d.]+)$", re.M)
PROGRESS = re.compile(r"^\[(\d), +(\d+)\] loss: (\S+) +size of \.grad: +(\S+) +momentum buffer: +(\S+) \(([\d.]+) x\)$",
                      re.M)


def summary_rows(stdout):
    """The final table as {"with": (steps, final_loss, accuracy), "without": ...}."""
    rows = {m[1]: (int(m[2].replace(",", "")), float(m[3]), float(m[4])) for m in ROW.finditer(stdout)}
    assert set(rows) == {"with", "without"}, f"no summary table in the output:\n{stdout}"
    return rows


def progress(stdout):
    """The printed progress lines of each run, [(loss text, .grad size, buffer size, ratio), ...].

    The output holds the run with zero_grad() first, each run ending in "Finished in".
    """
    parts = stdout.split("Finished in")
    assert len(parts) == 3, stdout
    runs = {}
    for name, part in zip(("with", "without"), parts[:2]):
        runs[name] = [(m[3], float(m[4]), float(m[5]), float(m[6])) for m in PROGRESS.finditer(part)]
        assert runs[name], f"no progress lines for the run {name} zero_grad():\n{stdout}"
    return runs


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
def test_final_loss_is_the_window_of_the_last_printed_line(recipe_run, lang):
    """The table's final loss is what the prose says: the last printed line's mean, or the non-finite loss."""
    stdout = recipe_run("zeroing_out_gradients", lang).stdout
    rows, lines = summary_rows(stdout), progress(stdout)
    table = {m[1]: m[3] for m in ROW.finditer(stdout)}
    stopped = re.search(r"^Non-finite loss \((\w+)\) at epoch \d+, batch \d+ \(step ([\d,]+)\)", stdout, re.M)
    assert table["with"] == lines["with"][-1][0]
    if stopped:
        assert table["without"] == stopped[1] and rows["without"][0] == int(stopped[2].replace(",", ""))
    else:
        assert table["without"] == lines["without"][-1][0]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_without_zero_grad_grad_is_a_growing_sum_and_the_buffer_ten_times_it(recipe_run, lang):
    lines = progress(recipe_run("zeroing_out_gradients", lang).stdout)
    largest_with = max(size for _, size, _, _ in lines["with"])
    _, first, _, _ = lines["without"][0]
    _, last, buffer, ratio = lines["without"][-1]
    assert last > 10 * largest_with, lines
    assert len(lines["without"]) == 1 or last > first, lines
    assert 9 <= ratio <= 10.05 and buffer == pytest.approx(ratio * last, rel=0.06), lines
    # With zero_grad() the buffer holds gradients that partly cancel: well under ten times .grad.
    assert max(r for _, _, _, r in lines["with"]) < 9, lines


@pytest.mark.parametrize("lang", LANGUAGES)
def test_marks_where_the_loss_doubles_on_one_figure(recipe_run, lang):
    run = recipe_run("zeroing_out_gradients", lang)
    assert re.search(r"^Twice the normal loss: step [\d,]+", run.stdout, re.M)
    assert len(run.figures) == 1
    assert "missing from font" not in run.stderr, run.stderr


@pytest.mark.parametrize("lang", LANGUAGES)
def test_optimizer_zero_grad_only_clears_its_own_parameters(recipe_run, lang):
    stdout = recipe_run("zeroing_out_gradients", lang).stdout
    counts = [int(n) for n in re.findall(r"^after [\w.()]+:\s+(\d+)", stdout, re.M)]
    assert counts == [10, 8, 0], stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_frozen_layers_get_no_gradient(recipe_run, lang):
    stdout = recipe_run("zeroing_out_gradients", lang).stdout
    match = re.search(r"^frozen all but fc3, after backward\(\): (\d+) have a gradient: (.*)$", stdout, re.M)
    assert match, stdout
    assert int(match[1]) == 2 and match[2].split(", ") == ["fc3.weight", "fc3.bias"]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_stopped_run_says_what_overflowed(recipe_run, lang):
    """Where the loss stops being finite, the line names the largest output and whether the weights are finite."""
    stdout = recipe_run("zeroing_out_gradients", lang).stdout
    stopped = re.search(r"^Non-finite loss \((\w+)\) at .*: largest output (\S+), weights all finite: "
                        r"(True|False)\. Stopping this run\.$", stdout, re.M)
    if "Non-finite loss" in stdout:
        assert stopped, stdout
        # Overflowed outputs, or weights that are no longer finite: one of the two.
        assert not math.isfinite(float(stopped[2])) or stopped[3] == "False" or stopped[1] == "nan", stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_printed_ranges_are_those_of_the_progress_lines(recipe_run, lang):
    """The prose quotes no sizes: it points at these lines, so they must say what the progress lines say."""
    stdout = recipe_run("zeroing_out_gradients", lang).stdout
    lines = progress(stdout)["with"]
    match = re.search(r"^over the printed lines: size of \.grad (\S+) to (\S+), momentum buffer (\S+) to (\S+) "
                      r"times as large$", stdout, re.M)
    assert match, stdout
    grads = [size for _, size, _, _ in lines]
    ratios = [ratio for _, _, _, ratio in lines]
    smallest, largest, lowest, highest = map(float, match.groups())
    assert smallest == pytest.approx(min(grads), rel=1e-2) and largest == pytest.approx(max(grads), rel=1e-2)
    assert lowest == pytest.approx(min(ratios), abs=0.11) and highest == pytest.approx(max(ratios), abs=0.11)
    first_with, first_without = progress(stdout)["with"][0][1], progress(stdout)["without"][0][1]
    ratio = re.search(r"^at the first printed line, \.grad is (\S+) times as large as in the normal run$", stdout, re.M)
    assert ratio and float(ratio[1]) == pytest.approx(first_without / first_with, rel=0.02), stdout


@pytest.mark.parametrize("lang", LANGUAGES)
def test_counts_the_classes_each_network_predicts(recipe_run, lang):
    stdout = recipe_run("zeroing_out_gradients", lang).stdout
    match = re.search(r"^classes predicted over the test images: (\d+) with zero_grad\(\), (\d+) without$",
                      stdout, re.M)
    assert match, stdout
    with_zero_grad, without = int(match[1]), int(match[2])
    assert 1 <= without <= 10 and 1 <= with_zero_grad <= 10
    if re.search(r"weights all finite: False", stdout):
        assert without == 1  # nan weights give every image the same answer


@pytest.mark.parametrize("lang", LANGUAGES)
def test_freezing_after_backward_leaves_a_stale_gradient_that_the_optimizer_applies(recipe_run, lang):
    stdout = recipe_run("zeroing_out_gradients", lang).stdout
    assert re.search(r"^conv1 frozen after backward\(\): \.grad still set: True, moved by optimizer\.step\(\): True$",
                     stdout, re.M), stdout
