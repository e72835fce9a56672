"""recipes/en and recipes/zh must hold the same recipes with the same code.

Prose (comments, docstrings) and the text drawn in plots are translated;
everything else, including what the scripts print, is identical. Every Chinese
page records the version of the English it translates (translation_records.py)
and must be updated when the English changes.

On a difference the checks name the first differing line of each file and say
what may differ (README.md, "Writing a recipe"); the messages are shown on
small generated twins at the end of this file.
"""

import ast
import difflib
import re
import textwrap
import unicodedata
from pathlib import Path

import pytest

import translation_records
from conftest import RECIPE_NAMES, RECIPES, REPO

# What a Chinese twin may translate besides comments and docstrings: the text
# drawn in a figure, which is found in the AST as follows.
# Calls all of whose positional string arguments are drawn (ticks are numbers,
# so in set_xticks(ticks, labels) only the labels are strings).
PLOT_TEXT_CALLS = {
    "annotate", "figtext", "legend", "set_label", "set_title", "set_xlabel",
    "set_ylabel", "suptitle", "text", "title", "xlabel", "ylabel",
    "set_xticks", "set_yticks", "set_xticklabels", "set_yticklabels", "xticks", "yticks",
}
# Keywords drawn as text in any call.
PLOT_TEXT_KEYWORDS = {"label", "title"}
# Keywords drawn as text in the calls above and in bar/barh: tick and category labels.
TICK_LABEL_KEYWORDS = {"labels", "tick_label"}
# Calls whose categories are drawn as tick labels: the first positional argument
# (or x= / y=) when it is a literal list or tuple of strings, e.g.
# ax.bar(["with zero_grad()", "without"], losses). A list held in a variable is
# code and must stay identical: write the category names in the call.
CATEGORY_CALLS = {"bar": "x", "barh": "y"}

WHAT_MAY_DIFFER = textwrap.fill(
    "Only comments, docstrings and text drawn in a figure may differ between the twins: the string "
    "arguments of " + ", ".join(sorted(PLOT_TEXT_CALLS)) + "; the keywords "
    + ", ".join(f"{k}=" for k in sorted(PLOT_TEXT_KEYWORDS)) + " of any call and "
    + ", ".join(f"{k}=" for k in sorted(TICK_LABEL_KEYWORDS)) + " of those calls and bar/barh; "
    "and the category names of bar/barh when its first argument (or x= / y=) is a literal list or "
    "tuple of strings. Everything printed stays English in both languages.", width=100)


def call_name(call):
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def is_category_list(node):
    return isinstance(node, (ast.List, ast.Tuple)) and bool(node.elts) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts)


def drawn_text(call):
    """The argument nodes of ``call`` whose strings are drawn in a figure (translated)."""
    name = call_name(call)
    drawn = list(call.args) if name in PLOT_TEXT_CALLS else []
    drawn += [k.value for k in call.keywords if k.arg in PLOT_TEXT_KEYWORDS]
    if name in PLOT_TEXT_CALLS or name in CATEGORY_CALLS:
        drawn += [k.value for k in call.keywords if k.arg in TICK_LABEL_KEYWORDS]
    if name in CATEGORY_CALLS:
        categories = call.args[:1] + [k.value for k in call.keywords if k.arg == CATEGORY_CALLS[name]]
        drawn += [node for node in categories if is_category_list(node)]
    return drawn


class Neutraliser(ast.NodeTransformer):
    """Blank out docstrings and the strings shown in plots."""

    def _blank_strings(self, node):
        for child in ast.walk(node):
            if isinstance(child, ast.Constant) and isinstance(child.value, str):
                child.value = "<text>"
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        for drawn in drawn_text(node):
            self._blank_strings(drawn)
        return node

    def _strip_docstring(self, node):
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body[0].value.value = "<docstring>"
        return node

    visit_Module = visit_FunctionDef = visit_ClassDef = visit_AsyncFunctionDef = _strip_docstring


def neutral_tree(path):
    return Neutraliser().visit(ast.parse(path.read_text(encoding="utf-8")))


def neutral_code(path):
    return ast.dump(neutral_tree(path))


def first_difference(a, b, where_a, where_b):
    """The innermost nodes (with a line number) around the first difference of two ASTs, in
    source order, or None. An extra statement on one side pairs with the end of the other list."""
    if type(a) is not type(b):
        return where_a, where_b
    if isinstance(a, list):
        for x, y in zip(a, b):
            found = first_difference(x, y, where_a, where_b)
            if found:
                return found
        if len(a) != len(b):
            extra_a = a[len(b)] if len(a) > len(b) else None
            extra_b = b[len(a)] if len(b) > len(a) else None
            return (extra_a if hasattr(extra_a, "lineno") else (a[-1] if a else where_a),
                    extra_b if hasattr(extra_b, "lineno") else (b[-1] if b else where_b))
        return None
    if isinstance(a, ast.AST):
        where_a = a if hasattr(a, "lineno") else where_a
        where_b = b if hasattr(b, "lineno") else where_b
        for field in a._fields:
            found = first_difference(getattr(a, field, None), getattr(b, field, None), where_a, where_b)
            if found:
                return found
        return None
    return None if a == b else (where_a, where_b)


def source_line(path, node, end=False):
    """``path:N: the line`` for a node's first line (or its last, for the end of a list)."""
    number = (getattr(node, "end_lineno", None) if end else None) or getattr(node, "lineno", 1)
    lines = path.read_text(encoding="utf-8").splitlines()
    text = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    return f"{display_path(path)}:{number}: {text}"


def display_path(path):
    path = Path(path)
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def code_difference(chinese, english):
    """None if the twins hold the same code, else a message naming the first differing line of each."""
    zh_tree, en_tree = neutral_tree(chinese), neutral_tree(english)
    if ast.dump(zh_tree) == ast.dump(en_tree):
        return None
    found = first_difference(zh_tree, en_tree, zh_tree, en_tree) or (zh_tree, en_tree)
    return (f"{display_path(chinese)} and its English twin {display_path(english)} differ in code "
            f"(prose and figure text aside); the first difference:\n"
            f"  {source_line(chinese, found[0])}\n  {source_line(english, found[1])}\n{WHAT_MAY_DIFFER}")


def text_structure(path):
    """Cell separators, heading levels and Sphinx-Gallery config comments, in order."""
    return [item for _, item in text_structure_lines(path)]


def text_structure_lines(path):
    """(line number, item) for each cell separator, heading level and Sphinx-Gallery config comment."""
    lines = path.read_text(encoding="utf-8").splitlines()
    structure = []
    for number, (previous, line) in enumerate(zip([""] + lines, lines), start=1):
        if line.startswith("# %%"):
            structure.append((number, "cell"))
        elif re.fullmatch(r"#? ?([=\-~^])\1{2,}", line) and previous.strip("# "):
            structure.append((number - 1, "heading " + line.strip("# ")[0]))  # the title's line
        elif line.startswith("# sphinx_gallery_") and "_ignore" not in line:  # ignore flags hold the record
            structure.append((number, line))
    return structure


def describe(item):
    if item == "cell":
        return "a `# %%` cell separator"
    if item.startswith("heading "):
        return f"a heading underlined with {item[-1] * 3}"
    return f"the comment `{item}`"


def structure_difference(chinese, english):
    """None if the twins have the same cells, headings and sphinx_gallery comments, else a
    message naming the piece one lacks and the line of each file where they part."""
    zh, en = text_structure_lines(chinese), text_structure_lines(english)
    if [i for _, i in zh] == [i for _, i in en]:
        return None
    zh_text = chinese.read_text(encoding="utf-8").splitlines()
    en_text = english.read_text(encoding="utf-8").splitlines()

    def at(path, text, entries, index):
        """path:N: line of the index-th entry, or the end of the file when there is none."""
        number = entries[index][0] if index < len(entries) else len(text)
        line = text[number - 1].strip() if text else ""
        return f"{display_path(path)}:{number}: {line}"

    matcher = difflib.SequenceMatcher(None, [i for _, i in zh], [i for _, i in en], autojunk=False)
    tag, i1, i2, j1, j2 = next(op for op in matcher.get_opcodes() if op[0] != "equal")
    if tag == "insert":
        what = (f"{display_path(chinese)} lacks {describe(en[j1][1])} that {display_path(english)} has "
                f"(add it where the English has it):")
    elif tag == "delete":
        what = (f"{display_path(chinese)} has {describe(zh[i1][1])} that {display_path(english)} lacks "
                f"(remove it, or add it to both):")
    else:
        what = (f"{display_path(chinese)} has {describe(zh[i1][1])} where {display_path(english)} has "
                f"{describe(en[j1][1])}:")
    return (f"{what}\n  {at(chinese, zh_text, zh, i1)}\n  {at(english, en_text, en, j1)}\n"
            "Both twins need the same `# %%` cells, the same heading levels (=, -, ~, ^) in the same\n"
            "order, and identical `# sphinx_gallery_...` comments.")


def test_both_languages_have_the_same_recipes():
    names = {lang: sorted(p.name for p in (RECIPES / lang).glob("*.py")) for lang in ("en", "zh")}
    assert names["en"] == names["zh"]
    assert names["en"], "no recipes found"


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_code_is_identical(name):
    difference = code_difference(RECIPES / "zh" / f"{name}.py", RECIPES / "en" / f"{name}.py")
    assert difference is None, difference


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_sections_match(name):
    difference = structure_difference(RECIPES / "zh" / f"{name}.py", RECIPES / "en" / f"{name}.py")
    assert difference is None, difference


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


# -- The messages of the checks above, shown on small generated twins ---------

ENGLISH_TWIN = '''"""
.. _tiny:

A tiny recipe
=============
"""

# %%
# Setup
# -----

import matplotlib.pyplot as plt

losses = [0.5, 0.25]
print(f"final loss: {losses[-1]}")

# %%
# A plot
# ------

fig, ax = plt.subplots()
ax.bar(["with zero_grad()", "without"], losses, label="loss")
ax.set_xticks([0, 1], labels=["first", "second"])
ax.set_yticklabels(["low", "high"])
ax.set_title("Loss")

# sphinx_gallery_thumbnail_number = 1
'''

CHINESE_TWIN = (ENGLISH_TWIN
                .replace("A tiny recipe\n=============", "一个小教程\n==========")
                .replace("# Setup\n# -----", "# 准备工作\n# --------")
                .replace("# A plot\n# ------", "# 画图\n# ----")
                .replace('"with zero_grad()", "without"', '"调用 zero_grad()", "不调用"')
                .replace('label="loss"', 'label="损失"')
                .replace('"first", "second"', '"第一次", "第二次"')
                .replace('"low", "high"', '"低", "高"')
                .replace('"Loss"', '"损失"'))


def twins(tmp_path, chinese, english=ENGLISH_TWIN):
    for lang, text in (("zh", chinese), ("en", english)):
        (tmp_path / lang).mkdir(exist_ok=True)
        (tmp_path / lang / "tiny.py").write_text(text, encoding="utf-8")
    return tmp_path / "zh" / "tiny.py", tmp_path / "en" / "tiny.py"


def line_of(text, fragment):
    return next(number for number, line in enumerate(text.splitlines(), start=1) if fragment in line)


def test_tick_labels_category_names_and_titles_may_be_translated(tmp_path):
    chinese, english = twins(tmp_path, CHINESE_TWIN)
    assert CHINESE_TWIN != ENGLISH_TWIN
    assert code_difference(chinese, english) is None
    assert structure_difference(chinese, english) is None


def test_a_translated_print_names_both_lines(tmp_path):
    translated = CHINESE_TWIN.replace('print(f"final loss:', 'print(f"最终损失:')
    chinese, english = twins(tmp_path, translated)
    message = code_difference(chinese, english)
    assert message is not None
    number = line_of(ENGLISH_TWIN, "print(")
    assert f"{chinese}:{number}: print(f\"最终损失: {{losses[-1]}}\")" in message, message
    assert f"{english}:{number}: print(f\"final loss: {{losses[-1]}}\")" in message, message
    assert "Everything printed stays English" in message and "set_xticklabels" in message, message


def test_a_category_list_in_a_variable_is_code(tmp_path):
    """Category names may only differ when written in the bar() call itself."""
    def held_in_a_variable(text, names):
        return text.replace(f"ax.bar([{names}],", f"names = [{names}]\nax.bar(names,")
    english = held_in_a_variable(ENGLISH_TWIN, '"with zero_grad()", "without"')
    chinese = held_in_a_variable(CHINESE_TWIN, '"调用 zero_grad()", "不调用"')
    message = code_difference(*twins(tmp_path, chinese, english))
    number = line_of(english, "names = [")
    assert f"zh/tiny.py:{number}: names = [" in message and f"en/tiny.py:{number}: names = [" in message, message


def test_an_extra_statement_names_where_the_code_parts(tmp_path):
    extra = CHINESE_TWIN.replace("fig, ax = plt.subplots()\n", "fig, ax = plt.subplots()\nfig.tight_layout()\n")
    message = code_difference(*twins(tmp_path, extra))
    number = line_of(ENGLISH_TWIN, "ax.bar(")
    assert f"zh/tiny.py:{number}: fig.tight_layout()" in message, message
    assert f"en/tiny.py:{number}: ax.bar(" in message, message


def test_a_missing_cell_names_the_piece_and_the_lines(tmp_path):
    second_cell = "\n# %%\n# 画图\n"
    assert second_cell in CHINESE_TWIN
    without = CHINESE_TWIN.replace(second_cell, "\n# 画图\n")
    chinese, english = twins(tmp_path, without)
    assert code_difference(chinese, english) is None  # comments only: the code check cannot see it
    message = structure_difference(chinese, english)
    assert message is not None
    assert f"{chinese} lacks a `# %%` cell separator that {english} has" in message, message
    assert f"{english}:{line_of(ENGLISH_TWIN, 'A plot') - 1}: # %%" in message, message
    # Where the Chinese goes on instead: the next heading.
    assert f"{chinese}:{line_of(without, '# 画图')}: # 画图" in message, message


def test_a_different_sphinx_gallery_comment_is_named(tmp_path):
    other = CHINESE_TWIN.replace("thumbnail_number = 1", "thumbnail_number = 2")
    chinese, english = twins(tmp_path, other)
    message = structure_difference(chinese, english)
    number = line_of(ENGLISH_TWIN, "thumbnail_number")
    assert f"{chinese}:{number}: # sphinx_gallery_thumbnail_number = 2" in message, message
    assert f"{english}:{number}: # sphinx_gallery_thumbnail_number = 1" in message, message
