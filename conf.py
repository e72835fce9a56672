"""Sphinx configuration shared by both languages of the zero-grad recipes site.

One conf.py serves both trees. The language comes from a build tag: the
Makefile builds a copy of ``docs/en`` with ``-t lang_en`` into
``_build/html/en`` and a copy of ``docs/zh`` with ``-t lang_zh`` into
``_build/html/zh``; English is the default.
"""

import re
from pathlib import Path

import matplotlib
from docutils import nodes
from sphinx.search.zh import SearchChinese
from sphinx.transforms import SphinxTransform
from sphinx_gallery import downloads, gen_rst

ROOT = Path(__file__).resolve().parent
LANG = "zh" if tags.has("lang_zh") else "en"  # noqa: F821  (Sphinx injects ``tags``)
OTHER_LANG = {"en": "zh", "zh": "en"}[LANG]

# Reading order of the gallery: mechanics, consequence, flagship, accumulation
# on purpose and in real training loops, pitfalls. A recipe missing from this
# list is appended at the end.
RECIPE_ORDER = [
    "gradients_accumulate.py",
    "linear_regression_without_zero_grad.py",
    "zeroing_out_gradients.py",
    "gradient_accumulation.py",
    "accumulation_in_practice.py",
    "distributed_accumulation.py",
    "zero_grad_pitfalls.py",
]

# -- Project -----------------------------------------------------------------

project = {"en": "Zero-grad recipes", "zh": "梯度清零实践"}[LANG]
author = {"en": "The zero-grad recipes authors", "zh": "梯度清零实践的作者们"}[LANG]
copyright = "2026, " + author
language = {"en": "en", "zh": "zh_CN"}[LANG]
locale_dirs = [str(ROOT / "docs" / "locale")]  # fills gaps in the theme's Chinese strings
root_doc = "index"

extensions = ["sphinx_gallery.gen_gallery"]
templates_path = [str(ROOT / "docs" / "_templates")]
html_static_path = [str(ROOT / "docs" / "_static")]
html_css_files = ["site.css"]
# The gallery is generated into the root of each language's source tree, so
# its index (the text of recipes/<lang>/README.rst, then the recipe cards) is
# the landing page and each recipe is a top-level page.
exclude_patterns = ["*.ipynb", "*.py", "*.zip"]

# Sphinx-Gallery's configuration holds functions (the sort key and the font
# setting below); Sphinx cannot pickle them into its environment cache
# and warns about it, which -W would turn into an error.
suppress_warnings = ["config.cache"]

# -- HTML --------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = project
html_last_updated_fmt = None
html_show_sourcelink = False
html_context = {
    "default_mode": "auto",  # without it the theme logs a console error on a first visit
    "lang": LANG,
    "other_lang": OTHER_LANG,
    "other_lang_name": {"en": "English", "zh": "简体中文"}[OTHER_LANG],
}
html_theme_options = {
    # Navigation lives in the left sidebar (every recipe, then the glossary);
    # the top bar keeps search, the language switch and the colour theme.
    "navbar_center": [],
    "search_bar_text": {"en": "Search the recipes…", "zh": "搜索教程……"}[LANG],
    "navbar_end": ["language-switch", "theme-switcher"],
    "secondary_sidebar_items": {"**": ["page-toc", "sg_download_links"], "index": []},
    "show_prev_next": True,
    "footer_start": ["copyright"],
    "footer_end": ["language-switch"],
}
html_sidebars = {"index": [], "**": ["sidebar-recipes"]}


# -- Sphinx-Gallery ----------------------------------------------------------


def recipe_order(path):
    """Sort key for the gallery: the reading order above, then by name."""
    name = Path(path).name
    if name in RECIPE_ORDER:
        return (RECIPE_ORDER.index(name), name)
    return (len(RECIPE_ORDER), name)


def use_chinese_font(gallery_conf, fname):
    """After Sphinx-Gallery's matplotlib reset, add a font with Chinese glyphs.

    The reset restores matplotlib's built-in defaults, which have no Chinese
    glyphs. DejaVu Sans stays first so Latin text looks the same in both
    languages; Noto Sans CJK SC supplies the Chinese characters.
    """
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", "Noto Sans CJK SC"]


FIRST_NOTEBOOK_CELL = {
    "en": (
        "# Running in Colab or a fresh Jupyter kernel? Install the requirements first:\n"
        "# %pip install torch torchvision matplotlib\n"
        "%matplotlib inline"
    ),
    "zh": (
        "# 在 Colab 或新的 Jupyter 内核中运行？请先安装依赖：\n"
        "# %pip install torch torchvision matplotlib\n"
        "%matplotlib inline\n"
        "# 图中的中文需要中文字体；下面按顺序选用本机已安装的第一个。\n"
        "import matplotlib.pyplot as plt\n"
        "from matplotlib import font_manager\n"
        "_installed = {f.name for f in font_manager.fontManager.ttflist}\n"
        "_cjk = ['Noto Sans CJK SC', 'Source Han Sans SC', 'Microsoft YaHei', 'PingFang SC', 'SimHei']\n"
        "plt.rcParams['font.family'] = ['DejaVu Sans'] + [f for f in _cjk if f in _installed]"
    ),
}[LANG]

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "recipes" / LANG),
    "gallery_dirs": ".",
    "filename_pattern": r"\.py$",
    "within_subsection_order": recipe_order,
    "reset_modules": ("matplotlib", use_chinese_font) if LANG == "zh" else ("matplotlib",),
    "first_notebook_cell": FIRST_NOTEBOOK_CELL,
    "download_all_examples": True,
    "abort_on_example_error": True,
    "show_signature": False,
    "write_computation_times": False,
    "min_reported_time": 0,
    "capture_repr": (),
    "matplotlib_animations": False,
    "remove_config_comments": True,
}

# -- Chinese strings for Sphinx-Gallery ---------------------------------------
# Sphinx-Gallery has no translations: its reader-facing strings are module-level
# reST templates, formatted when a page is written. The Chinese build swaps in
# translated templates with the same placeholders.



def translate_template(module, name, english, chinese):
    """Replace one English phrase in a Sphinx-Gallery template, or fail loudly."""
    template = getattr(module, name)
    if english not in template:
        raise RuntimeError(f"Sphinx-Gallery's {name} changed; update its translation in conf.py")
    setattr(module, name, template.replace(english, chinese))


if LANG == "zh":
    for module, name, english, chinese in [
        (gen_rst, "EXAMPLE_HEADER", ":ref:`Go to the end <sphx_glr_download_{1}>`\n        to download the full example code{2}",
         ":ref:`跳到页尾 <sphx_glr_download_{1}>`\\ 下载完整的示例代码。"),
        (gen_rst, "TIMING_CONTENT", "**Total running time of the script:** ({0:.0f} minutes {1:.3f} seconds)",
         "**脚本总运行时间：** {0:.0f} 分 {1:.3f} 秒"),
        (gen_rst, "NOTEBOOK_DOWNLOAD", "Download Jupyter notebook:", "下载 Jupyter 笔记本："),
        (gen_rst, "CODE_DOWNLOAD", "Download {1} source code:", "下载 Python 源代码："),
        (gen_rst, "ZIP_DOWNLOAD", "Download zipped:", "下载压缩包："),
        (downloads, "CODE_ZIP_DOWNLOAD", "Download all examples {0} source code:", "下载全部示例的 Python 源代码："),
        (downloads, "NOTEBOOK_ZIP_DOWNLOAD", "Download all examples in Jupyter notebooks:", "下载全部示例的 Jupyter 笔记本："),
    ]:
        translate_template(module, name, english, chinese)


# -- Chinese line breaks --------------------------------------------------------
# Recipe prose is wrapped at about 80 columns. Between two Chinese characters a
# line break must vanish, but HTML renders it as a space; join such lines.

CJK = "\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"
CJK_LINE_BREAK = re.compile(f"(?<=[{CJK}])\n(?=[{CJK}])")


class JoinChineseLines(SphinxTransform):
    default_priority = 700

    def apply(self):
        for node in list(self.document.findall(nodes.Text)):
            if isinstance(node.parent, (nodes.literal_block, nodes.literal, nodes.raw, nodes.comment)):
                continue
            joined = CJK_LINE_BREAK.sub("", node.astext())
            if joined != node.astext():
                node.parent.replace(node, nodes.Text(joined))


# -- Chinese search ---------------------------------------------------------------
# Sphinx 9.0 tokenises Chinese with jieba (in requirements.txt) but its page
# script asks for a ``ChineseStemmer`` it does not ship, so search never starts
# (sphinx-doc/sphinx#14229). Chinese words need no stemming; the English stemmer
# it does ship leaves them unchanged and still stems English words.


class ChineseSearch(SearchChinese):
    language_name = "English"


def setup(app):
    if LANG == "zh":
        app.add_transform(JoinChineseLines)
        app.add_search_language(ChineseSearch)
