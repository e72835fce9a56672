"""Chinese search finds the pages under the other names readers use for a term.

The Chinese glossary (docs/zh/glossary.rst) has a section 「其他说法」 with lines
such as ``* 梯度归零、梯度置零：本站称「清零」（梯度清零）。``: other names, the
glossary's term, and optionally the term's full form. The pages keep to the
glossary's term (清零), but a reader may search for 梯度归零 or 梯度清零. Sphinx indexes
Chinese with jieba, and its search page looks a query up as one whole term,
so on a Chinese build this extension

* teaches jieba every name in that section and every term they stand for, so
  that 梯度归零 or 梯度累积 in a text becomes a term of the index too, and
* indexes each page that contains a glossary term under its other names and
  full form as well.

Enabled by listing ``chinese_search_synonyms`` in conf.py's ``extensions``.
"""

import re
from pathlib import Path

import jieba
from sphinx.search import zh

SECTION = "其他说法"
# Other names, the glossary's term, and optionally the term's full form: （梯度清零）.
LINE = re.compile(r"^\* (.+?)：本站称「(.+?)」(?:（(.+?)）)?", re.M)


def synonyms_of(glossary_text):
    """{term: [other names]} from the glossary's 「其他说法」 section."""
    if SECTION not in glossary_text:
        raise RuntimeError(f"docs/zh/glossary.rst has no section {SECTION}")
    section = glossary_text.split(f"\n{SECTION}\n", 1)[1]
    synonyms = {}
    for names, term, full_form in LINE.findall(section):
        synonyms.setdefault(term, []).extend(names.split("、") + ([full_form] if full_form else []))
    if not synonyms:
        raise RuntimeError(f"the section {SECTION} of docs/zh/glossary.rst lists no other names")
    return synonyms


SYNONYMS = {}
original_split = zh.SearchChinese.split


def split_with_synonyms(self, text):
    words = original_split(self, text)
    return words + [name for word in words for name in SYNONYMS.get(word, ())]


def load_synonyms(app):
    if not (app.config.language or "").startswith("zh"):
        return
    SYNONYMS.update(synonyms_of((Path(app.srcdir) / "glossary.rst").read_text(encoding="utf-8")))
    for term, names in SYNONYMS.items():
        for word in [term, *names]:
            jieba.add_word(word)
    zh.SearchChinese.split = split_with_synonyms


def setup(app):
    app.connect("builder-inited", load_synonyms)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
