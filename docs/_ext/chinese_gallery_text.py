"""Two repairs to what Sphinx-Gallery writes from Chinese recipes.

* Figure alt texts: Sphinx-Gallery joins a figure's suptitle and axes titles
  with ", ", a half-width comma and space that Chinese text does not use
  (「全部 1,000 次迭代, 前 50 次迭代」). On a Chinese build they are joined with a
  full-width 「；」, which carries its own spacing. A title's own text is kept
  as it is ("SGD, momentum=0.9" stays code-like English).
* Notebooks: Chinese prose writes an escaped space next to inline code
  (``None``\\ （…）) because docutils does not end or start a literal at
  full-width punctuation. In reST it is nothing; in a notebook's Markdown it
  would show as a backslash, so it is dropped there (both languages).

Enabled by listing ``chinese_gallery_text`` in conf.py's ``extensions``.
"""

from sphinx_gallery import notebook, scrapers

ALT_SEPARATOR = "；"


def figure_titles(fig):
    """The titles Sphinx-Gallery puts in a figure's alt text, joined the Chinese way."""
    titles = []
    suptitle = getattr(fig, "_suptitle", None)
    if suptitle is not None and suptitle.get_text():
        titles.append(suptitle.get_text())
    for ax in fig.axes:
        for loc in ("left", "center", "right"):
            if text := ax.get_title(loc=loc):
                titles.append(text)
    return ALT_SEPARATOR.join(titles)


def replace(module, name, function):
    if not callable(getattr(module, name, None)):
        raise RuntimeError(f"Sphinx-Gallery no longer has {module.__name__}.{name}; "
                           "update docs/_ext/chinese_gallery_text.py")
    setattr(module, name, function)


def markdown_without_escaped_spaces(rst2md):
    def convert(text, *args, **kwargs):
        return rst2md(text.replace("\\ ", ""), *args, **kwargs)
    return convert


def patch_sphinx_gallery(app, config):
    if (config.language or "").startswith("zh"):
        replace(scrapers, "_matplotlib_fig_titles", figure_titles)
    if not getattr(notebook.rst2md, "drops_escaped_spaces", False):
        convert = markdown_without_escaped_spaces(notebook.rst2md)
        convert.drops_escaped_spaces = True
        replace(notebook, "rst2md", convert)


def setup(app):
    app.connect("config-inited", patch_sphinx_gallery)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
