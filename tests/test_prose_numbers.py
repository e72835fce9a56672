"""The prose-number check (docs/_ext/prose_numbers.py) on small generated pages.

Each test builds a one-page Sphinx project that looks like a Sphinx-Gallery
recipe page (prose, a code block, a printed-output block) with only the
extension under test, so that a prose number that the output does not print
fails the build without a full build of the site.
"""

import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, smoke_env

PAGE = """\
A recipe
========

.. rst-class:: sphx-glr-example-title

The loss falls to {prose} after 2,500 steps, with ``momentum=0.9``.

.. code-block:: Python

    PRINT_EVERY = 2500  # {comment} in a comment is no code
    optimizer = SGD(params, lr=0.001, momentum=0.9)

.. rst-class:: sphx-glr-script-out

 .. code-block:: none

    [1,  2500] loss: 2.162
    [1,  5000] loss: 1.799
"""
CONF = f"""\
import sys
sys.path.insert(0, {str(REPO / "docs" / "_ext")!r})
extensions = ["prose_numbers"]
prose_numbers_constants = "constants.toml"
"""


def build(tmp_path, page, constants="", smoke=False):
    """Build the page with -W, as a full build (or a smoke one); return (exit code, what Sphinx printed)."""
    source = tmp_path / "source"
    source.mkdir(parents=True)
    env = smoke_env()
    if not smoke:
        del env["ZERO_GRAD_SMOKE"]
    (source / "conf.py").write_text(CONF)
    (source / "index.rst").write_text(page)
    (source / "constants.toml").write_text(textwrap.dedent(constants))
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "dummy", "-W", "--keep-going", "-q", "-E",
         str(source), str(tmp_path / "out")],
        cwd=source, env=env,
        capture_output=True, text=True, timeout=120,
    )
    return result.returncode, result.stdout + result.stderr


def test_a_number_the_output_printed_passes(tmp_path):
    code, output = build(tmp_path, PAGE.format(prose="2.162", comment="1.5"))
    assert code == 0, output


def test_a_changed_prose_number_fails_with_page_sentence_and_nearest_printed(tmp_path):
    code, output = build(tmp_path, PAGE.format(prose="2.163", comment="1.5"))
    assert code != 0
    assert "index: the prose says 2.163, which neither the page's code nor its printed output has" in output
    assert '"The loss falls to 2.163 after 2,500 steps, with momentum=0.9."' in output, output
    assert "Nearest numbers the output printed: 2.162, 1.799" in output, output
    assert output.count("the prose says") == 1, output  # 2,500 and 0.9 are on the page


def test_a_number_only_in_a_code_comment_does_not_count(tmp_path):
    code, output = build(tmp_path, PAGE.format(prose="1.5", comment="1.5"))
    assert code != 0 and "the prose says 1.5," in output, output


def test_a_declared_constant_passes_and_a_stale_one_fails(tmp_path):
    declared = '[index]\n"2.163" = "a derived figure"\n'
    code, output = build(tmp_path / "declared", PAGE.format(prose="2.163", comment="1.5"), declared)
    assert code == 0, output
    code, output = build(tmp_path / "stale", PAGE.format(prose="2.162", comment="1.5"), declared)
    assert code != 0 and "declares 2.163, which the prose no longer says" in output, output


def test_smoke_builds_skip_the_check_and_say_so_once(tmp_path):
    code, output = build(tmp_path, PAGE.format(prose="2.163", comment="1.5"), smoke=True)
    assert code == 0, output
    assert output.count("prose-number check skipped (smoke mode") == 1, output


def test_a_recipe_page_this_build_did_not_execute_is_not_checked(tmp_path):
    not_executed = PAGE.format(prose="2.163", comment="1.5").split(".. rst-class:: sphx-glr-script-out")[0]
    code, output = build(tmp_path, not_executed)
    assert code == 0, output


@pytest.mark.parametrize(("prose", "found"), [
    ("2,792", ["2,792"]), ("3.05e+08 and 1e-3", ["3.05e+08", "1e-3"]), ("float16 and cu130 and 2x", []),
    ("ResNet-18", ["18"]), ("第 6,269 步，54.0% 的图像", ["6,269", "54.0"]), ("3.5x faster", []),
    ("torch 2.14.1", ["2.14.1"]), ("[1, 2500]", ["1", "2500"]),
])
def test_what_counts_as_a_number(prose, found):
    sys.path.insert(0, str(REPO / "docs" / "_ext"))
    try:
        import prose_numbers
    finally:
        sys.path.remove(str(REPO / "docs" / "_ext"))
    assert prose_numbers.numbers_in(prose) == found
