"""Sphinx extension: search that works on Chinese pages.

Sphinx 9.0 tokenises Chinese with jieba (in requirements.txt) but its page
script asks for a ``ChineseStemmer`` it does not ship, so search never starts
(sphinx-doc/sphinx#14229). Chinese words need no stemming; the English stemmer
it does ship leaves them unchanged and still stems English words. Registered
for the language ``zh`` only, so English pages keep Sphinx's own search.
"""

from sphinx.search.zh import SearchChinese


class ChineseSearch(SearchChinese):
    language_name = "English"


def setup(app):
    app.add_search_language(ChineseSearch)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
