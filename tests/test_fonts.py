"""The Chinese figures need no system font: the pinned package's font has every glyph.

Each check runs in a fresh interpreter whose matplotlib is left with its own
bundled fonts only, as on a machine without any CJK font installed, and then
sets up fonts exactly as the site build does (docs/_ext/chinese_font.py).
"""

import ast
import json
import re
import subprocess
import sys

import pytest

from conftest import RECIPES, REPO
from test_translations import drawn_text

CJK_CHARACTER = "\u4e00-\u9fff"

# Hides every font matplotlib did not ship itself, then runs CHECK.
WITHOUT_SYSTEM_FONTS = r"""
import json, sys, warnings
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import font_manager
bundled = Path(matplotlib.get_data_path()).resolve()
font_manager.fontManager.ttflist = [
    f for f in font_manager.fontManager.ttflist if Path(f.fname).resolve().is_relative_to(bundled)]
sys.path.insert(0, sys.argv[1])
import chinese_font
texts = json.loads(sys.argv[2])
"""


def run_without_system_fonts(check, texts):
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SYSTEM_FONTS + check, str(REPO / "docs" / "_ext"), json.dumps(texts)],
        capture_output=True, text=True, timeout=120,
    )


def chinese_plot_texts():
    """Every string the Chinese recipes draw in their figures (the constant parts of f-strings too)."""
    texts = set()
    for path in sorted((RECIPES / "zh").glob("*.py")):
        for call in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(call, ast.Call):
                continue
            texts |= {node.value for arg in drawn_text(call) for node in ast.walk(arg)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    return sorted(texts)


def test_the_chinese_recipes_draw_chinese():
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in text) for text in chinese_plot_texts())


def test_the_pinned_font_draws_every_chinese_plot_text():
    result = run_without_system_fonts(r"""
chinese_font.use_chinese_font()
print(font_manager.findfont(chinese_font.FAMILY, fallback_to_default=False))
fig = plt.figure()
for i, text in enumerate(texts):
    fig.text(0, i / len(texts), text)
fig.canvas.draw()
""", chinese_plot_texts())
    assert result.returncode == 0, result.stderr
    assert "site-packages/mplfonts/fonts/NotoSansCJKsc-Regular.otf" in result.stdout, result.stdout


def test_without_the_pinned_font_chinese_fails():
    """The check above can fail: here matplotlib has no Chinese glyph at all."""
    result = run_without_system_fonts(r"""
chinese_font.fail_on_missing_glyphs()
fig = plt.figure()
fig.text(0, 0, texts[0])
fig.canvas.draw()
""", ["梯度"])
    assert result.returncode != 0
    assert "Glyph 26799" in result.stderr and "missing from font(s) DejaVu Sans" in result.stderr, result.stderr


@pytest.mark.parametrize("character", ["\U00017000", "\u2fff"], ids=["tangut", "unassigned"])
def test_a_glyph_the_pinned_font_lacks_is_an_error_naming_it(character):
    result = run_without_system_fonts(r"""
chinese_font.use_chinese_font()
fig = plt.figure()
fig.text(0, 0, "梯度 " + texts[0])
fig.canvas.draw()
""", [character])
    assert result.returncode != 0
    assert f"Glyph {ord(character)}" in result.stderr, result.stderr
    searched = re.search(r"missing from font\(s\) (.*)\.$", result.stderr, re.M)
    assert searched and set(searched[1].split(", ")) == {"DejaVu Sans", "Noto Sans CJK SC"}, result.stderr
