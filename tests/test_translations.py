"""recipes/en and recipes/zh must hold the same recipes with the same code.

Prose (comments, docstrings) and the text drawn in plots are translated;
everything else, including what the scripts print, is identical.
"""

import ast
import re
import unicodedata

import pytest

from conftest import RECIPE_NAMES, RECIPES

# Calls whose string arguments are drawn in a figure, so they are translated.
PLOT_TEXT_CALLS = {
    "annotate", "figtext", "legend", "set_label", "set_title", "set_xlabel",
    "set_ylabel", "suptitle", "text", "title", "xlabel", "ylabel",
}
PLOT_TEXT_KEYWORDS = {"label", "title"}


class Neutraliser(ast.NodeTransformer):
    """Blank out docstrings and the strings shown in plots."""

    def _blank_strings(self, node):
        for child in ast.walk(node):
            if isinstance(child, ast.Constant) and isinstance(child.value, str):
                child.value = "<text>"
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in PLOT_TEXT_CALLS:
            for arg in node.args:
                self._blank_strings(arg)
        for keyword in node.keywords:
            if keyword.arg in PLOT_TEXT_KEYWORDS:
                self._blank_strings(keyword.value)
        return node

    def _strip_docstring(self, node):
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body[0].value.value = "<docstring>"
        return node

    visit_Module = visit_FunctionDef = visit_ClassDef = visit_AsyncFunctionDef = _strip_docstring


def neutral_code(path):
    return ast.dump(Neutraliser().visit(ast.parse(path.read_text(encoding="utf-8"))))


def text_structure(path):
    """Cell separators, heading levels and Sphinx-Gallery config comments, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    structure = []
    for previous, line in zip([""] + lines, lines):
        if line.startswith("# %%"):
            structure.append("cell")
        elif re.fullmatch(r"#? ?([=\-~^])\1{2,}", line) and previous.strip("# "):
            structure.append("heading " + line.strip("# ")[0])
        elif line.startswith("# sphinx_gallery_"):
            structure.append(line)
    return structure


def test_both_languages_have_the_same_recipes():
    names = {lang: sorted(p.name for p in (RECIPES / lang).glob("*.py")) for lang in ("en", "zh")}
    assert names["en"] == names["zh"]
    assert names["en"], "no recipes found"


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_code_is_identical(name):
    assert neutral_code(RECIPES / "zh" / f"{name}.py") == neutral_code(RECIPES / "en" / f"{name}.py")


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_sections_match(name):
    assert text_structure(RECIPES / "zh" / f"{name}.py") == text_structure(RECIPES / "en" / f"{name}.py")


def display_width(text):
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


@pytest.mark.parametrize("path", sorted((RECIPES / "zh").glob("*.py")) + sorted((RECIPES / "zh").glob("*.rst")),
                         ids=lambda p: p.name)
def test_chinese_heading_underlines_cover_the_title(path):
    lines = [line.removeprefix("#").strip() for line in path.read_text(encoding="utf-8").splitlines()]
    for title, underline in zip(lines, lines[1:]):
        if title and re.fullmatch(r"([=\-~^])\1{2,}", underline):
            assert len(underline) >= display_width(title), f"underline too short for {title!r}"


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_chinese_recipe_is_translated(name):
    """A Chinese recipe whose prose is still English would pass the code checks above."""
    text = (RECIPES / "zh" / f"{name}.py").read_text(encoding="utf-8")
    prose = [line for line in text.splitlines() if line.startswith("# ") and not line.startswith("# sphinx_gallery")]
    chinese = [line for line in prose if re.search(r"[\u4e00-\u9fff]", line)]
    assert len(chinese) >= 0.5 * len(prose), f"only {len(chinese)} of {len(prose)} prose lines are Chinese"
