"""recipes/en and recipes/zh must hold the same recipes with the same code.

Prose (comments, docstrings) and the text drawn in plots are translated;
everything else, including what the scripts print, is identical. Every Chinese
page records the version of the English it translates (translation_records.py)
and must be updated when the English changes.
"""

import ast
import re
import unicodedata
from pathlib import Path

import pytest

import translation_records
from conftest import RECIPE_NAMES, RECIPES

# Calls whose string arguments are drawn in a figure, so they are translated.
PLOT_TEXT_CALLS = {
    "annotate", "figtext", "legend", "set_label", "set_title", "set_xlabel",
    "set_xticklabels", "set_ylabel", "suptitle", "text", "title", "xlabel", "ylabel",
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
        elif line.startswith("# sphinx_gallery_") and "_ignore" not in line:  # ignore flags hold the record
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


@pytest.mark.parametrize("page", translation_records.chinese_pages(), ids=str)
def test_chinese_page_translates_the_current_english(page):
    current, summary, changes = translation_records.state(page)
    assert current, (f"{page}: {summary}\n{changes}\nUpdate the translation, then run "
                     f"`make translation-record PAGE={page}`")


def test_a_one_word_change_to_the_english_prose_is_drift(tmp_path, monkeypatch):
    """The record follows the English prose, comments and strings, not its code layout."""
    english = (RECIPES / "en" / "gradient_accumulation.py").read_text(encoding="utf-8")
    before = translation_records.fingerprint(english, ".py")
    one_word = english.replace("# Setup\n", "# Set-up\n", 1)
    assert one_word != english
    assert translation_records.fingerprint(one_word, ".py") != before
    reformatted = english.replace("import copy\n", "import copy  \n", 1)
    assert translation_records.fingerprint(reformatted, ".py") == before
    assert translation_records.fingerprint("Title\n=====\n", ".rst") != \
        translation_records.fingerprint("Title!\n======\n", ".rst")

    # A Chinese page recorded against one English text, checked after a change.
    for lang, text in (("en", english), ("zh", "# 中文\n")):
        (tmp_path / "recipes" / lang).mkdir(parents=True)
        (tmp_path / "recipes" / lang / "x.py").write_text(text, encoding="utf-8")
    monkeypatch.setattr(translation_records, "REPO", tmp_path)
    page = Path("recipes/zh/x.py")
    assert translation_records.state(page)[0] is False  # no record yet
    translation_records.record(page)
    assert translation_records.state(page)[0] is True
    assert "sphinx_gallery_start_ignore" in (tmp_path / page).read_text(encoding="utf-8")
    (tmp_path / "recipes" / "en" / "x.py").write_text(one_word, encoding="utf-8")
    current, summary, _ = translation_records.state(page)
    assert current is False and "changed since" in summary
