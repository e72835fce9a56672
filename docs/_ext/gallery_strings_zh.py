"""Sphinx extension: Sphinx-Gallery's reader-facing strings in Chinese.

Sphinx-Gallery has no translations: its reader-facing strings are module-level
reST templates, formatted when a page is written. The Chinese build swaps in
translated templates with the same placeholders. A full-width colon carries its
own spacing, so the space after the English colon goes with it. A template that
no longer holds the English phrase fails the build, so that an upgrade of
Sphinx-Gallery cannot silently bring English back onto Chinese pages.
"""

from sphinx_gallery import downloads, gen_rst

TRANSLATIONS = [
    (gen_rst, "EXAMPLE_HEADER",
     ":ref:`Go to the end <sphx_glr_download_{1}>`\n        to download the full example code{2}",
     ":ref:`跳到页尾 <sphx_glr_download_{1}>`\\ 下载完整的示例代码。"),
    (gen_rst, "TIMING_CONTENT", "**Total running time of the script:** ({0:.0f} minutes {1:.3f} seconds)",
     "**脚本总运行时间：**\\ {0:.0f} 分 {1:.3f} 秒"),
    (gen_rst, "NOTEBOOK_DOWNLOAD", "Download Jupyter notebook: ", "下载 Jupyter 笔记本："),
    (gen_rst, "CODE_DOWNLOAD", "Download {1} source code: ", "下载 Python 源代码："),
    (gen_rst, "ZIP_DOWNLOAD", "Download zipped: ", "下载压缩包："),
    (downloads, "CODE_ZIP_DOWNLOAD", "Download all examples {0} source code: ", "下载全部示例的 Python 源代码："),
    (downloads, "NOTEBOOK_ZIP_DOWNLOAD", "Download all examples in Jupyter notebooks: ",
     "下载全部示例的 Jupyter 笔记本："),
]


def translate_template(module, name, english, chinese):
    """Replace one English phrase in a Sphinx-Gallery template, or fail loudly."""
    template = getattr(module, name)
    if english not in template:
        raise RuntimeError(f"Sphinx-Gallery's {name} changed; update its translation in {__file__}")
    setattr(module, name, template.replace(english, chinese))


def translate(app, config):
    if config.language.startswith("zh"):
        for module, name, english, chinese in TRANSLATIONS:
            translate_template(module, name, english, chinese)


def setup(app):
    # Early (priority 0), before the execution record reads the running-time template.
    app.connect("config-inited", translate, priority=0)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
