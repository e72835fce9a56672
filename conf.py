"""Sphinx configuration shared by both languages of the zero-grad recipes site.

One conf.py serves both trees. The language comes from a build tag: the
Makefile builds a copy of ``docs/en`` with ``-t lang_en`` into
``_build/html/en`` and a copy of ``docs/zh`` with ``-t lang_zh`` into
``_build/html/zh``; English is the default.
"""

import datetime
import platform
import re
import sys
import time
from pathlib import Path

from docutils import nodes
from sphinx.search.zh import SearchChinese
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx_gallery import downloads, gen_rst

ROOT = Path(__file__).resolve().parent
logger = logging.getLogger(__name__)
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
import chinese_font  # noqa: E402  (a local module, found through the line above)

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
    "low_precision_accumulation.py",
    "distributed_accumulation.py",
    "zero_grad_pitfalls.py",
]

# -- Project -----------------------------------------------------------------

project = {"en": "Zero-grad recipes", "zh": "梯度清零实践"}[LANG]
author = {"en": "The zero-grad recipes authors", "zh": "梯度清零实践项目组"}[LANG]
copyright = "2026, " + author
language = {"en": "en", "zh": "zh_CN"}[LANG]
locale_dirs = [str(ROOT / "docs" / "locale")]  # fills gaps in the theme's Chinese strings
root_doc = "index"

extensions = ["sphinx_gallery.gen_gallery"]
templates_path = [str(ROOT / "docs" / "_templates")]
html_static_path = [str(ROOT / "docs" / "_static")]
html_css_files = ["site.css"]
html_favicon = str(ROOT / "docs" / "_static" / "favicon.svg")
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


def cpu_model():
    """The processor's marketing name, as /proc/cpuinfo or the platform reports it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def execution_record():
    """A reST line saying when, with which versions and on which device a recipe ran."""
    import torch
    import torchvision

    device, kind = (torch.cuda.get_device_name(), "GPU") if torch.cuda.is_available() else (cpu_model(), "CPU")
    device += {"en": f" ({kind})", "zh": f"（{kind}）"}[LANG]
    facts = dict(date=datetime.date.today().isoformat(), torch=torch.__version__,
                 torchvision=torchvision.__version__, device=device)
    line = {
        "en": "**Executed on** {date} with torch {torch} and torchvision {torchvision}, on {device}.",
        "zh": "**运行于** {date}，使用 torch {torch} 和 torchvision {torchvision}，设备：{device}。",
    }[LANG].format(**facts)
    return f"\n.. rst-class:: sphx-glr-executed-on\n\n   {line}\n\n"


RECIPE_STARTED = {}


def prepare_recipe_run(gallery_conf, fname, when):
    """Run by Sphinx-Gallery before and after it executes each recipe.

    Before: after Sphinx-Gallery's own matplotlib reset (the entry before this
    one in ``reset_modules``), draw Chinese with the pinned font and make a
    missing glyph an error; stamp the page with where it runs; tell the
    terminal which recipe is running. After: how long it took.
    """
    if fname is None:
        return
    name = f"{LANG}/{Path(fname).name}"
    if when == "before":
        chinese_font.use_fonts_of(LANG)
        # The page's footer is written right after this run (and kept as long as
        # the recipe is unchanged), so the record describes this very run.
        gen_rst.TIMING_CONTENT = TIMING_CONTENT + execution_record().replace("{", "{{").replace("}", "}}")
        RECIPE_STARTED[name] = time.perf_counter()
        print(f"[{name}] executing", file=sys.stderr, flush=True)
    else:
        seconds = time.perf_counter() - RECIPE_STARTED.pop(name)
        print(f"[{name}] done in {seconds:.1f} s", file=sys.stderr, flush=True)


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
        "# 图中的中文需要中文字体：优先用本机已有的（依次查找 Linux、macOS、Windows 上常见的几种），\n"
        "# 没有时用 mplfonts 包自带的 Noto Sans CJK SC。\n"
        "import importlib.util\n"
        "from pathlib import Path\n"
        "import matplotlib.pyplot as plt\n"
        "from matplotlib import font_manager\n"
        "_cjk = ['Noto Sans CJK SC', 'Source Han Sans SC', 'WenQuanYi Micro Hei', 'PingFang SC',\n"
        "        'Hiragino Sans GB', 'Heiti SC', 'Microsoft YaHei', 'SimHei', 'Arial Unicode MS']\n"
        "_installed = {f.name for f in font_manager.fontManager.ttflist}\n"
        "if not set(_cjk) & _installed and importlib.util.find_spec('mplfonts'):\n"
        "    _fonts = Path(importlib.util.find_spec('mplfonts').origin).parent / 'fonts'\n"
        "    font_manager.fontManager.addfont(str(_fonts / 'NotoSansCJKsc-Regular.otf'))\n"
        "    _installed.add('Noto Sans CJK SC')\n"
        "plt.rcParams['font.family'] = ['DejaVu Sans'] + [f for f in _cjk if f in _installed]\n"
        "if not set(_cjk) & _installed:\n"
        "    print('没有找到中文字体，图中的中文会显示为方框：请先运行 %pip install mplfonts，再重新运行本单元格。')"
    ),
}[LANG]

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "recipes" / LANG),
    "gallery_dirs": ".",
    "filename_pattern": r"\.py$",
    "within_subsection_order": recipe_order,
    "reset_modules": ("matplotlib", prepare_recipe_run),
    "reset_modules_order": "both",
    "image_srcset": ["2x"],  # sharp figures on high-density screens
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
# translated templates with the same placeholders. A full-width colon carries
# its own spacing, so the space after the English colon goes with it.



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
         "**脚本总运行时间：**\\ {0:.0f} 分 {1:.3f} 秒"),
        (gen_rst, "NOTEBOOK_DOWNLOAD", "Download Jupyter notebook: ", "下载 Jupyter 笔记本："),
        (gen_rst, "CODE_DOWNLOAD", "Download {1} source code: ", "下载 Python 源代码："),
        (gen_rst, "ZIP_DOWNLOAD", "Download zipped: ", "下载压缩包："),
        (downloads, "CODE_ZIP_DOWNLOAD", "Download all examples {0} source code: ", "下载全部示例的 Python 源代码："),
        (downloads, "NOTEBOOK_ZIP_DOWNLOAD", "Download all examples in Jupyter notebooks: ", "下载全部示例的 Jupyter 笔记本："),
    ]:
        translate_template(module, name, english, chinese)

# The running-time paragraph of this language, before ``prepare_recipe_run``
# appends each run's record to it.
TIMING_CONTENT = gen_rst.TIMING_CONTENT


# -- Chinese spacing --------------------------------------------------------------
# Recipe prose is wrapped at about 80 columns, and reST wants whitespace around
# inline markup (**强调**, ``code``). HTML renders both as a space, which
# Chinese has only between Chinese and Latin text. So on Chinese pages, a line
# break between two Chinese characters vanishes, and so does whitespace next to
# full-width punctuation (which carries its own spacing) or between a Chinese
# character and inline markup that starts or ends with one.

FULL_WIDTH_PUNCTUATION = "\u3000-\u303f\uff00-\uffef"
CJK = "\u4e00-\u9fff" + FULL_WIDTH_PUNCTUATION
CODE_NODES = (nodes.literal_block, nodes.literal, nodes.raw, nodes.comment)


def space_vanishes(left, right):
    """Whether whitespace between text ending in ``left`` and text starting with ``right`` must go."""
    return bool(re.fullmatch(f"[{FULL_WIDTH_PUNCTUATION}].|.[{FULL_WIDTH_PUNCTUATION}]|[{CJK}][{CJK}]", left + right))


def drop_vanishing_spaces(text, whitespace=r"\s+"):
    """``text`` without the runs of ``whitespace`` that ``space_vanishes`` says must go."""
    return re.sub(rf"(\S){whitespace}(?=(\S))", lambda m: m[1] if space_vanishes(m[1], m[2]) else m[0], text)


class JoinChineseText(SphinxPostTransform):
    """After cross-references are resolved, so that a link shows its real text."""

    default_priority = 900

    def run(self, **kwargs):
        for node in list(self.document.findall(nodes.Text)):
            parent = node.parent
            if isinstance(parent, CODE_NODES):
                continue
            text = drop_vanishing_spaces(node.astext(), "\n")  # line breaks of the wrapped source
            index = parent.index(node)
            before = parent[index - 1].astext() if index > 0 else ""
            after = parent[index + 1].astext() if index + 1 < len(parent) else ""
            stripped = text.strip()
            if stripped and after and text[-1].isspace() and space_vanishes(stripped[-1], after[0]):
                text = text.rstrip()
            if stripped and before and text[0].isspace() and space_vanishes(before[-1], stripped[0]):
                text = text.lstrip()
            if text != node.astext():
                parent.replace(node, nodes.Text(text))


# -- Card texts -------------------------------------------------------------------
# A gallery card's hover text is the first paragraph of the recipe's docstring,
# with its reST markup removed by Sphinx-Gallery. That removal only recognises
# markup preceded by a space, which Chinese text has none of, and it turns
# :ref:`label` into the bare label. Remove markup anywhere first, and name a
# referenced page by its title.

REF = re.compile(r":(?:ref|doc):`([^`<]+?)(?:\s*<([^`>]+)>)?`")
LABELLED_TITLE = re.compile(r"^\.\. _([\w-]+):\s*\n\s*\n(.+)\n=+\s*$", re.M)
PAGE_TITLES = {
    label: title.strip()
    for path in [*(ROOT / "recipes" / LANG).glob("*.py"), *(ROOT / "docs" / LANG).glob("*.rst")]
    for label, title in LABELLED_TITLE.findall(path.read_text(encoding="utf-8"))
}
sanitize_rst = gen_rst._sanitize_rst


def card_text(rst):
    rst = REF.sub(lambda m: m[1] if m[2] else PAGE_TITLES.get(m[1], m[1]), rst)
    rst = re.sub(r"``(.+?)``|\*\*(.+?)\*\*|\*(.+?)\*", lambda m: next(g for g in m.groups() if g), rst)
    # Sphinx-Gallery joined the lines of the paragraph with spaces.
    return drop_vanishing_spaces(sanitize_rst(rst.replace("\\ ", "")))


gen_rst._sanitize_rst = card_text


# -- What readers must never see ---------------------------------------------------
# Printed output is copied onto the page as it is. A Python warning, a traceback
# or a path of the machine that built the site there is a bug: fail the build.

OUTPUT_BLOCK = re.compile(r"^\.\. rst-class:: sphx-glr-script-out\n\n(?: {4}.*\n|\n)*", re.M)
BUILD_INTERNALS = re.compile(
    r"Traceback \(most recent call last\)|^\s*\S+:\d+: \w*Warning: |\w+Warning: "
    + "|" + "|".join(re.escape(str(path)) for path in {ROOT, Path.home(), Path(sys.prefix)})
    + r"|/tmp/|site-packages", re.M,
)


def check_printed_output(app, docname, source):
    for block in OUTPUT_BLOCK.findall(source[0]):
        if found := BUILD_INTERNALS.search(block):
            logger.warning("printed output of %s shows build internals (%r):\n%s",
                           docname, found[0], block, location=docname)


# -- Chinese search ---------------------------------------------------------------
# Sphinx 9.0 tokenises Chinese with jieba (in requirements.txt) but its page
# script asks for a ``ChineseStemmer`` it does not ship, so search never starts
# (sphinx-doc/sphinx#14229). Chinese words need no stemming; the English stemmer
# it does ship leaves them unchanged and still stems English words.


class ChineseSearch(SearchChinese):
    language_name = "English"


def setup(app):
    app.connect("source-read", check_printed_output)
    if LANG == "zh":
        app.add_post_transform(JoinChineseText)
        app.add_search_language(ChineseSearch)
