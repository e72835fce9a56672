"""Sphinx extension: plain, correct hover texts on the gallery's recipe cards.

A gallery card's hover text is the first paragraph of the recipe's docstring,
with its reST markup removed by Sphinx-Gallery. That removal only recognises
markup preceded by a space, which Chinese text has none of, and it turns
:ref:`label` into the bare label. Remove markup anywhere first, and name a
referenced page by its title.
"""

import re
from pathlib import Path

from sphinx_gallery import gen_rst

from chinese_spacing import drop_vanishing_spaces

ROOT = Path(__file__).resolve().parents[2]
REF = re.compile(r":(?:ref|doc):`([^`<]+?)(?:\s*<([^`>]+)>)?`")
LABELLED_TITLE = re.compile(r"^\.\. _([\w-]+):\s*\n\s*\n(.+)\n=+\s*$", re.M)
sanitize_rst = gen_rst._sanitize_rst
page_titles = {}


def read_page_titles(app, config):
    """The title of every labelled page of this language: recipes and docs."""
    lang = "zh" if config.language.startswith("zh") else "en"
    for path in [*(ROOT / "recipes" / lang).glob("*.py"), *(ROOT / "docs" / lang).glob("*.rst")]:
        for label, title in LABELLED_TITLE.findall(path.read_text(encoding="utf-8")):
            page_titles[label] = title.strip()


def card_text(rst):
    rst = REF.sub(lambda m: m[1] if m[2] else page_titles.get(m[1], m[1]), rst)
    rst = re.sub(r"``(.+?)``|\*\*(.+?)\*\*|\*(.+?)\*", lambda m: next(g for g in m.groups() if g), rst)
    # Sphinx-Gallery joined the lines of the paragraph with spaces.
    return drop_vanishing_spaces(sanitize_rst(rst.replace("\\ ", "")))


def setup(app):
    app.connect("config-inited", read_page_titles)
    gen_rst._sanitize_rst = card_text
    return {"parallel_read_safe": True, "parallel_write_safe": True}
