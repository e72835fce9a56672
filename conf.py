"""Sphinx configuration shared by both languages of the zero-grad recipes site.

One conf.py serves both trees. The language comes from a build tag: the
Makefile builds a copy of ``docs/en`` with ``-t lang_en`` into
``_build/html/en`` and a copy of ``docs/zh`` with ``-t lang_zh`` into
``_build/html/zh``; English is the default.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# The build's own transforms and checks: local extensions, one job each.
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
import execution_record  # noqa: E402  (a local module, found through the line above)

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
    "optimizer_step_in_backward.py",
    "distributed_accumulation.py",
    "distributed_pitfalls.py",
    "zero_grad_pitfalls.py",
]

# -- Project -----------------------------------------------------------------

project = {"en": "Zero-grad recipes", "zh": "梯度清零实践"}[LANG]
author = {"en": "The zero-grad recipes authors", "zh": "梯度清零实践项目组"}[LANG]
copyright = {"en": "2026, ", "zh": "2026 "}[LANG] + author  # Chinese drops the comma: © 2026 梯度清零实践项目组
language = {"en": "en", "zh": "zh_CN"}[LANG]
locale_dirs = [str(ROOT / "docs" / "locale")]  # fills gaps in the theme's Chinese strings
root_doc = "index"

extensions = [
    "sphinx_gallery.gen_gallery",
    "gallery_strings_zh",  # Sphinx-Gallery's reader-facing strings, in the Chinese build
    "execution_record",  # what each recipe page ran on, and the fonts it draws with
    "card_text",  # plain hover texts on the gallery's cards
    "chinese_spacing",  # no stray spaces between Chinese characters
    "chinese_search",  # search that works on Chinese pages
    "printed_output_check",  # no warning, traceback or build path in printed output
    "prose_numbers",  # every number in the prose is one the page's run printed
    "chinese_gallery_text",  # figure alt texts joined with ；, no escaped spaces in notebooks
    "chinese_search_synonyms",  # Chinese search finds pages under the glossary's 其他说法
]
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
    "reset_modules": ("matplotlib", execution_record.prepare_recipe_run),
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
