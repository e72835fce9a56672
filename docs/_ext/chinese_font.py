"""The font of the Chinese text in every figure the project draws.

Chinese glyphs come from Noto Sans CJK SC (SIL Open Font License 1.1) as shipped
by the ``mplfonts`` package pinned in requirements.txt, never from the fonts a
machine happens to have: the site build (conf.py) and the test runner
(tests/conftest.py) call ``use_chinese_font()`` before a Chinese recipe draws,
so the figures come out the same everywhere. Only that one font file of the
package is used; the package itself is never imported.

A glyph that no font has would be drawn as an empty box. Matplotlib only warns
about it; ``fail_on_missing_glyphs()`` turns that warning into an error, which
names the character and the fonts searched.
"""

import importlib.util
import warnings
from pathlib import Path

import matplotlib
from matplotlib import font_manager

PACKAGE = "mplfonts"
FONT_FILE = Path("fonts") / "NotoSansCJKsc-Regular.otf"
FAMILY = "Noto Sans CJK SC"
# Latin text keeps matplotlib's default font, so it looks the same in both languages.
FONT_FAMILY = ["DejaVu Sans", FAMILY]
# The start of matplotlib's warning: "Glyph 26799 (\N{CJK UNIFIED IDEOGRAPH-68AF}) missing from font(s) ..."
MISSING_GLYPH = r"Glyph \d+ \(.*\) missing from font"


def font_path():
    """The pinned package's copy of Noto Sans CJK SC."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the Chinese figures need the {PACKAGE} package: pip install -r requirements.txt")
    path = Path(spec.origin).parent / FONT_FILE
    if not path.is_file():
        raise RuntimeError(f"{PACKAGE} no longer ships {FONT_FILE}; pin the version in requirements.txt")
    return path


def fail_on_missing_glyphs():
    warnings.filterwarnings("error", message=MISSING_GLYPH, category=UserWarning)


def use_chinese_font():
    """Draw Chinese with the pinned font from now on, and fail on any glyph it lacks."""
    path = str(font_path())
    manager = font_manager.fontManager
    if not any(entry.fname == path for entry in manager.ttflist):
        # A system copy of the same family would compete with the pinned file
        # for the same name; keep the pinned one only.
        manager.ttflist = [entry for entry in manager.ttflist if entry.name != FAMILY]
        manager.addfont(path)  # also clears matplotlib's font lookup cache
    matplotlib.rcParams["font.family"] = FONT_FAMILY
    fail_on_missing_glyphs()


def use_fonts_of(lang):
    """The figure fonts of a page in ``lang`` ("en" or "zh"): missing glyphs fail in both."""
    if lang == "zh":
        use_chinese_font()
    else:
        fail_on_missing_glyphs()
