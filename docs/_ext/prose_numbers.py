"""Sphinx extension: every number in a page's prose is one its own run printed.

The site promises that the numbers on a page are real. A number quoted in the
prose from an earlier run, on another machine, breaks that promise silently:
other CPU kernels, another thread count or a GPU round differently, and a
chaotic run then takes another course. So in a full build every number in the
prose of a page (recipes and docs/, both languages: paragraphs, headings, list
items, inline literals) must appear in that page's code or printed output, or
be declared in ``docs/prose_numbers.toml`` under the page's name with the
reason it is a constant of the text (a derived figure, or one from PyTorch's
documentation). Otherwise the build fails with one message per number: the
page, the number, the sentence it is in and the nearest numbers the output did
print.

Numbers compare by value after dropping thousands separators ("2,792" is 2792,
"54.0" is 54); digits glued to letters (float16, cu130, 2x) are no numbers.
Comments in the page's code do not count as code: a stale number in a comment
must not vouch for a stale number in the prose. Smoke builds (ZERO_GRAD_SMOKE=1,
random data and few steps) and builds that execute nothing skip the check and
say so once; a recipe page that this build did not execute (``make html
RECIPE=...``) has no output to check against and is skipped.
"""

import io
import os
import re
import sys
import tokenize
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path

from docutils import nodes
from sphinx.util import logging

from chinese_spacing import drop_vanishing_spaces

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
CONSTANTS = ROOT / "docs" / "prose_numbers.toml"

# Atomic, so that "3.5x" is no number at all rather than "3"; ASCII-only word
# characters around it, so that Chinese text may touch a number.
NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])"
    r"(?>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)*(?:[eE][+\-\u2212]?\d+)?)"
    r"(?![A-Za-z0-9_])"
)
OUTPUT = "sphx-glr-script-out"
NOT_PROSE = {OUTPUT, "sphx-glr-timing", "sphx-glr-executed-on", "sphx-glr-download-link-note",
             "sphx-glr-footer", "sphx-glr-thumbnails"}
SKIPPED_NODES = (nodes.literal_block, nodes.raw, nodes.comment, nodes.image, nodes.target)
SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+(?=[A-Z`*(])|(?<=[。！？；])")


def value(number):
    """A number's value, or its text where it is no decimal (a version such as 2.14.1)."""
    text = number.replace(",", "").replace("\u2212", "-")
    try:
        return Decimal(text)
    except InvalidOperation:
        return text


def numbers_in(text):
    return [match[0] for match in NUMBER.finditer(text)]


def without_comments(code):
    """Python code without its comments (the text as it is where it does not tokenize)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return code
    return " ".join(t.string for t in tokens if t.type != tokenize.COMMENT)


def classes_up(node):
    """The classes of ``node`` and of every element above it."""
    found = set()
    while node is not None:
        if isinstance(node, nodes.Element):
            found.update(node.get("classes", []))
        node = node.parent
    return found


def inside(node, types):
    while node is not None:
        if isinstance(node, types):
            return True
        node = node.parent
    return False


def sentence_around(text, number):
    """The sentence of ``text`` that holds ``number``, on one line as a reader sees it."""
    text = drop_vanishing_spaces(" ".join(text.split()))
    for sentence in SENTENCE_END.split(text):
        if number in sentence:
            return sentence if len(sentence) <= 240 else sentence[:237] + "..."
    return text[:240]


def nearest(number, printed):
    """Up to three numbers of ``printed`` closest to ``number`` in relative terms."""
    target = value(number)
    candidates = {p: value(p) for p in printed}
    numeric = {p: v for p, v in candidates.items() if isinstance(v, Decimal)}
    if not isinstance(target, Decimal) or not numeric:
        return list(dict.fromkeys(printed))[:3]
    scale = abs(target) or Decimal(1)
    return sorted(numeric, key=lambda p: (abs(numeric[p] - target) / scale, p))[:3]


def page_numbers(doctree):
    """(prose numbers with their text and line, code numbers, output numbers, is a recipe page)."""
    prose, code, output = [], [], []
    recipe = False
    for node in doctree.findall(nodes.Element):
        if "sphx-glr-example-title" in node.get("classes", []):
            recipe = True
        if isinstance(node, nodes.literal_block):
            if OUTPUT in classes_up(node):
                output += numbers_in(node.astext())
            else:
                code += numbers_in(without_comments(node.astext()))
    for text in doctree.findall(nodes.Text):
        if inside(text.parent, SKIPPED_NODES) or classes_up(text.parent) & NOT_PROSE:
            continue
        block = text.parent
        while not isinstance(block, (nodes.paragraph, nodes.title, nodes.term, nodes.caption)) and block.parent:
            block = block.parent
        for number in numbers_in(text.astext()):
            prose.append((number, block.astext(), block.line or text.parent.line))
    return prose, code, output, recipe


def declared_constants(app):
    path = Path(app.config.prose_numbers_constants)
    if not path.exists():
        return {}
    with path.open("rb") as file:
        table = tomllib.load(file)
    return {page: {value(number) for number in numbers} for page, numbers in table.items()}


def twin_numbers(app, docname):
    """The numbers of the other language's source of this page: a constant may serve only one language."""
    other = "en" if app.config.language.startswith("zh") else "zh"
    sources = [ROOT / "recipes" / other / f"{docname}.py", ROOT / "docs" / other / f"{docname}.rst"]
    if docname == "index":
        sources.append(ROOT / "recipes" / other / "README.rst")
    return {value(n) for path in sources if path.exists() for n in numbers_in(path.read_text(encoding="utf-8"))}


SAID_SKIPPED = []


def skip_reason(app):
    if os.environ.get("ZERO_GRAD_SMOKE") == "1":
        return "smoke mode: its numbers differ from a real run by design"
    gallery_conf = getattr(app.config, "sphinx_gallery_conf", None) or {}
    if str(gallery_conf.get("plot_gallery", True)).lower() in ("0", "false"):
        return "the recipes are not executed in this build"
    return None


def check_page(app, doctree):
    reason = skip_reason(app)
    if reason:
        if not SAID_SKIPPED:
            print(f"prose-number check skipped ({reason})", file=sys.stderr, flush=True)
            SAID_SKIPPED.append(reason)
        return
    docname = app.env.docname
    # Sphinx reads this page again when the list of constants changes.
    app.env.note_dependency(str(Path(app.config.prose_numbers_constants).resolve()))
    prose, code, output, recipe = page_numbers(doctree)
    if recipe and not output:
        return  # not executed in this build: nothing to check against
    declared = declared_constants(app).get(docname, set())
    known = {value(n) for n in code + output} | declared
    for number, text, line in prose:
        if value(number) in known:
            continue
        shown = ", ".join(nearest(number, output)) or "none (the page prints nothing)"
        logger.warning(
            "%s: the prose says %s, which neither the page's code nor its printed output has, in: "
            "\"%s\" Nearest numbers the output printed: %s. Print it from the code, say it without the "
            "number, or declare it under [%s] in docs/prose_numbers.toml with the reason.",
            docname, number, sentence_around(text, number), shown, docname,
            location=(docname, line), type="prose_numbers",
        )
    in_prose = {value(number) for number, _, _ in prose} | twin_numbers(app, docname)
    for stale in sorted(map(str, declared - in_prose)):
        logger.warning("%s: docs/prose_numbers.toml declares %s, which the prose no longer says; remove it.",
                       docname, stale, location=docname, type="prose_numbers")


def setup(app):
    app.add_config_value("prose_numbers_constants", str(CONSTANTS), "env")
    app.connect("doctree-read", check_page)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
