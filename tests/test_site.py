"""The smoke-mode site read as files: what a reader of either language gets.

Static checks of `_build/smoke/html` (built once per session by the
``smoke_site`` fixture): every recipe has its page, figures, thumbnail and
downloads in both trees, pages declare their language, Chinese pages carry no
English interface text, every page links to the same page in the other
language, executed pages report their running time, and the notebooks start
with a cell that works in Jupyter or Colab.

The helpers at the top are shared with test_links.py, test_browser.py,
test_downloads.py and test_failure_modes.py.
"""

import ast
import datetime
import json
import re
import zipfile
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup, Comment, Declaration, Doctype, ProcessingInstruction

from conftest import LANGUAGES, RECIPE_NAMES, RECIPES, REPO

pytestmark = pytest.mark.site  # needs the smoke-mode site (or builds one)


HTML_LANG = {"en": "en", "zh": "zh-CN"}
OTHER_LANG = {"en": "zh", "zh": "en"}
# Folders of a Sphinx output tree that hold assets, not pages.
ASSET_DIRS = {"_static", "_sources", "_downloads", "_images"}
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def tree_pages(site, lang):
    """Paths (relative to the language tree) of every HTML page of one language."""
    root = site / lang
    return sorted(
        p.relative_to(root) for p in root.rglob("*.html") if not ASSET_DIRS & set(p.relative_to(root).parts)
    )


def read_html(path):
    return BeautifulSoup(Path(path).read_text(encoding="utf-8"), "html.parser")


def find_download(site, lang, filename):
    """The one file Sphinx copied to ``_downloads/<hash>/filename`` in a language tree."""
    found = sorted((site / lang / "_downloads").glob(f"*/{filename}"))
    assert len(found) == 1, f"expected one {lang}/_downloads/*/{filename}, found {found}"
    return found[0]


def conf_value(name):
    """A literal setting of conf.py (top level, or a key of a dict), read without running conf.py."""
    for node in ast.walk(ast.parse((REPO / "conf.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == name:
                    return ast.literal_eval(value)
    raise AssertionError(f"conf.py does not set {name}")


# Where Sphinx-Gallery writes the recipe pages and the gallery index, in each tree.
GALLERY = Path(conf_value("gallery_dirs"))


def gallery_index(site, lang):
    return site / lang / GALLERY / "index.html"


def recipe_page(site, lang, name):
    return site / lang / GALLERY / f"{name}.html"


def recipe_source(lang, name):
    return RECIPES / lang / f"{name}.py"


def script_outputs(soup):
    """The text of every block of printed output (``.sphx-glr-script-out``) on a page."""
    return [block.get_text() for block in soup.select("div.sphx-glr-script-out")]


# Wall-clock durations in printed output; they differ from run to run.
SECONDS = re.compile(r"\b\d[\d,]*(?:\.\d+)?\s*(?:s|ms|us|µs|ns|sec|secs|seconds?)\b")
# A ratio of two durations ("takes 49.7x as long"), as noisy as they are.
RATIO = re.compile(r"\b\d+(?:\.\d+)?x\b")
NUMBER = re.compile(r"^[-+]?\d[\d,]*(?:\.\d+)?%?$")


def without_timings(text):
    """Printed output with wall-clock times masked, so that two runs can be compared.

    Masks "<number> s" (and ms, us, seconds) and "<number>x" ratios anywhere,
    and the last column of the rows of a table whose header ends with a
    "time (s)" column, as the flagship recipe's summary table has. Spaces that
    right-align a masked number go too.
    """
    lines, in_timed_table = [], False
    for line in text.splitlines():
        if re.search(r"\btime\b.*\((?:s|ms|us)\)\s*$", line):
            in_timed_table = True
        elif in_timed_table and line.split() and NUMBER.match(line.split()[-1]):
            line = line.rsplit(None, 1)[0] + " <time>"
        else:
            in_timed_table = False
        line = SECONDS.sub("<time>", line.rstrip())
        line = RATIO.sub("<ratio>", re.sub(r"\s+<time>", " <time>", line))
        lines.append(line)
    return "\n".join(lines)


# -- Landing page ------------------------------------------------------------


def test_landing_page_links_both_languages(smoke_site):
    soup = read_html(smoke_site / "index.html")
    hrefs = {a["href"] for a in soup.find_all("a", href=True)}
    for lang in LANGUAGES:
        assert f"{lang}/index.html" in hrefs, f"index.html does not link {lang}/index.html: {hrefs}"
        assert (smoke_site / lang / "index.html").is_file()
    chinese = soup.find("a", href="zh/index.html")
    assert chinese.get("lang") == "zh-CN" and chinese.get("hreflang") == "zh-CN", chinese


# -- Pages, figures, downloads -----------------------------------------------


def test_both_trees_have_the_same_pages(smoke_site):
    pages = tree_pages(smoke_site, "en")
    assert pages == tree_pages(smoke_site, "zh")
    for expected in (Path("index.html"), Path("search.html"), Path("genindex.html"), GALLERY / "index.html"):
        assert expected in pages, f"{expected} missing"


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_has_page_figures_and_thumbnail(smoke_site, lang, name):
    page = recipe_page(smoke_site, lang, name)
    assert page.is_file(), f"{page} was not built"
    soup = read_html(page)
    article = soup.select_one("article")
    figures = [img["src"] for img in article.find_all("img") if f"sphx_glr_{name}_" in img["src"]]
    for src in figures:
        assert (page.parent / src).is_file(), f"{page.name} shows {src}, which does not exist"
    if re.search(r"^\s*(import matplotlib|from matplotlib)", recipe_source(lang, name).read_text(), re.M):
        assert figures, f"{lang}/{name} imports matplotlib but its page shows no figure"
    # The other language shows the same figures (the same code draws them).
    other = read_html(recipe_page(smoke_site, OTHER_LANG[lang], name)).select_one("article")
    assert figures == [img["src"] for img in other.find_all("img") if f"sphx_glr_{name}_" in img["src"]]

    thumbnail = smoke_site / lang / "_images" / f"sphx_glr_{name}_thumb.png"
    assert thumbnail.is_file() and thumbnail.stat().st_size > 0, f"{thumbnail} missing"
    gallery = gallery_index(smoke_site, lang)
    cards = [card for card in read_html(gallery).select("div.sphx-glr-thumbcontainer")
             if any((gallery.parent / a["href"]).resolve() == page.resolve() for a in card.find_all("a", href=True))]
    assert len(cards) == 1, f"{gallery} has {len(cards)} cards for {name}"
    card_images = [(gallery.parent / img["src"]).resolve() for img in cards[0].find_all("img")]
    assert card_images == [thumbnail.resolve()], card_images


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_recipe_downloads(smoke_site, lang, name):
    """The page links its .py, .ipynb and .zip; the .py is the recipe itself."""
    page = recipe_page(smoke_site, lang, name)
    links = {page.parent.joinpath(a["href"]).resolve() for a in read_html(page).find_all("a", href=True)
             if "_downloads/" in a["href"]}
    for suffix in (".py", ".ipynb", ".zip"):
        path = find_download(smoke_site, lang, name + suffix)
        assert path.stat().st_size > 0, path
        assert path.resolve() in links, f"{page} does not link {path.name}"

    script = find_download(smoke_site, lang, f"{name}.py")
    assert script.read_bytes() == recipe_source(lang, name).read_bytes(), \
        f"the {lang} download {script.name} is not recipes/{lang}/{name}.py"
    with zipfile.ZipFile(find_download(smoke_site, lang, f"{name}.zip")) as archive:
        assert sorted(archive.namelist()) == sorted([f"{name}.py", f"{name}.ipynb"])
        assert archive.read(f"{name}.py") == script.read_bytes()


def gallery_zips(site, lang):
    """{".py": path, ".ipynb": path} of the download-all archives the gallery index links."""
    gallery = gallery_index(site, lang)
    soup = read_html(gallery)
    zips = {}
    for kind, suffix in (("python", ".py"), ("jupyter", ".ipynb")):
        links = soup.select(f".sphx-glr-footer-gallery .sphx-glr-download-{kind} a[href]")
        assert len(links) == 1, f"{gallery} has {len(links)} links to download all {kind} files"
        zips[suffix] = (gallery.parent / links[0]["href"]).resolve()
        assert zips[suffix].suffix == ".zip" and zips[suffix].parent.parent.name == "_downloads", zips[suffix]
    return zips


@pytest.mark.parametrize("lang", LANGUAGES)
def test_gallery_zips_hold_every_recipe(smoke_site, lang):
    for suffix, path in gallery_zips(smoke_site, lang).items():
        assert path.is_file(), f"{path} does not exist"
        with zipfile.ZipFile(path) as archive:
            assert sorted(archive.namelist()) == sorted(name + suffix for name in RECIPE_NAMES), path.name
            if suffix == ".py":
                for name in RECIPE_NAMES:
                    assert archive.read(name + suffix) == recipe_source(lang, name).read_bytes(), name


@pytest.mark.parametrize("lang", LANGUAGES)
def test_gallery_follows_the_reading_order(smoke_site, lang):
    """The gallery lists the recipes in conf.py's RECIPE_ORDER, then any others by name."""
    gallery = gallery_index(smoke_site, lang)
    shown = [(gallery.parent / a["href"]).resolve()
             for a in read_html(gallery).select("div.sphx-glr-thumbcontainer a[href]")]
    shown = [path.stem for path in shown if path.parent == gallery.parent.resolve()]
    order = [Path(name).stem for name in conf_value("RECIPE_ORDER")]
    expected = [n for n in order if n in RECIPE_NAMES] + sorted(n for n in RECIPE_NAMES if n not in order)
    assert shown == expected


def test_pages_load_nothing_from_other_hosts(smoke_site):
    """Scripts, styles, fonts and images all come with the site: it works offline and tracks no one."""
    loads = {"script": "src", "img": "src", "iframe": "src", "source": "src", "link": "href"}
    remote = {}
    for page in [Path("index.html")] + [Path(lang) / p for lang in LANGUAGES for p in tree_pages(smoke_site, lang)]:
        for tag in read_html(smoke_site / page).find_all(list(loads)):
            if tag.name == "link" and not {"stylesheet", "preload", "icon", "modulepreload"} & set(tag.get("rel", [])):
                continue
            url = tag.get(loads[tag.name], "")
            if re.match(r"^(https?:)?//", url):
                remote.setdefault(url, []).append(str(page))
    assert not remote, "pages load from other hosts:\n" + "\n".join(
        f"{url} (on {len(pages)} pages, e.g. {pages[0]})" for url, pages in remote.items())


# -- Language ----------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_pages_declare_their_language(smoke_site, lang):
    wrong = {}
    for page in tree_pages(smoke_site, lang):
        declared = read_html(smoke_site / lang / page).find("html").get("lang")
        if declared != HTML_LANG[lang]:
            wrong[str(page)] = declared
    assert not wrong, f'pages of {lang}/ should have <html lang="{HTML_LANG[lang]}">: {wrong}'


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_page_links_the_same_page_in_the_other_language(smoke_site, lang):
    other = OTHER_LANG[lang]
    problems = []
    for page in tree_pages(smoke_site, lang):
        path = smoke_site / lang / page
        switches = read_html(path).select("a.language-switch")
        if not switches:
            problems.append(f"{page}: no a.language-switch")
        for a in switches:
            target = (path.parent / a["href"]).resolve()
            if target != (smoke_site / other / page).resolve() or not target.is_file():
                problems.append(f"{page}: language link {a['href']} is not {other}/{page}")
            if a.get("hreflang") != HTML_LANG[other]:
                problems.append(f"{page}: language link has hreflang={a.get('hreflang')}")
    assert not problems, "\n".join(problems)


# Reader-facing English phrases of Sphinx, pydata-sphinx-theme and Sphinx-Gallery.
ENGLISH_UI = (
    "Download", "Total running time", "Go to the end", "Gallery generated", "Search", "On this page",
    "Previous", "Next", "previous", "next", "Back to top", "Skip to main content", "Color mode",
    "System Settings", "Light", "Dark", "Breadcrumb", "Copyright", "Contents", "Index", "Section Navigation",
    "Site Navigation", "Navigation", "Note", "Warning", "See also", "Hint", "Tip", "Created using",
    "Built with", "Show Source", "Edit on", "Home", "Menu", "Close", "Toggle", "Link to this",
    "minutes", "seconds", "source code", "notebook", "zipped", "all examples", "Please activate",
    "Searching", "Search Results", "Expand", "Collapse",
)
UI_PATTERN = re.compile(r"\b(" + "|".join(map(re.escape, ENGLISH_UI)) + r")\b")
# Attributes a reader meets as tooltips, placeholders or screen-reader labels.
UI_ATTRIBUTES = ("title", "aria-label", "placeholder", "data-bs-title", "data-tooltip")
# Parts of a page's content that Sphinx or Sphinx-Gallery write, not the author.
GENERATED_IN_ARTICLE = (
    ".sphx-glr-download-link-note", ".sphx-glr-footer", ".sphx-glr-timing", ".sphx-glr-signature",
    ".admonition-title", "a.headerlink", ".sphx-glr-script-out-label",
)


def interface_strings(soup, whole_page=False):
    """(kind, string) for the text and tooltips of a page that the theme or the generators wrote.

    That is everything outside the article, plus what Sphinx-Gallery and Sphinx
    insert into the article (or, with ``whole_page``, all of the article),
    minus code, program output, keyboard keys and anything marked as being in
    another language (the language switch).
    """
    soup = BeautifulSoup(str(soup), "html.parser")  # work on a copy
    for tag in soup.select("code.download"):  # Sphinx-Gallery's download labels are set as code
        for span in tag.find_all("span"):
            span.unwrap()
        tag.unwrap()
    soup.smooth()
    for tag in soup(["script", "style", "pre", "code", "kbd", "noscript", "samp"]):
        tag.decompose()
    for tag in soup.select(".highlight, .sphx-glr-script-out"):
        tag.decompose()
    for tag in soup.find_all(lang=True):
        if tag.name != "html" and tag["lang"] != soup.html.get("lang"):
            tag.decompose()
    article = soup.select_one("article")
    if article is not None and not whole_page:
        kept = [BeautifulSoup(str(tag), "html.parser") for sel in GENERATED_IN_ARTICLE for tag in article.select(sel)]
        article.decompose()
    else:
        kept = []
    strings = []
    for part in [soup, *kept]:
        strings += [("text", " ".join(s.split())) for s in part.find_all(string=True)
                    if s.strip() and not isinstance(s, (Comment, Declaration, Doctype, ProcessingInstruction))]
        strings += [(name, tag[name].strip()) for tag in part.find_all(True) for name in UI_ATTRIBUTES
                    if tag.get(name, "").strip()]
    return strings


def test_no_english_interface_on_chinese_pages(smoke_site):
    """No Sphinx, theme or Sphinx-Gallery phrase stays English on a Chinese page.

    Searches all text outside code and program output, and the tooltips.
    (Sphinx-Gallery's "Out:" label is drawn by CSS; test_browser.py checks that.)
    """
    leaks = {}
    for page in tree_pages(smoke_site, "zh"):
        found = {f"{kind}: {value!r}" for kind, value in interface_strings(read_html(smoke_site / "zh" / page), True)
                 if UI_PATTERN.search(value)}
        if found:
            leaks[str(page)] = sorted(found)
    assert not leaks, "English interface text on Chinese pages:\n" + "\n".join(f"{p}: {s}" for p, s in leaks.items())


def test_chinese_interface_differs_from_english(smoke_site):
    """Any interface string shown identically on an English page and its Chinese twin is untranslated.

    This catches English strings that the phrase list above does not know about.
    Strings without a Latin word, or with a Chinese character, are not English.
    """
    allowed = {"Ctrl"}  # a key's name
    leaks = {}
    for page in tree_pages(smoke_site, "zh"):
        english = set(interface_strings(read_html(smoke_site / "en" / page)))
        same = {f"{kind}: {value!r}" for kind, value in interface_strings(read_html(smoke_site / "zh" / page))
                if (kind, value) in english and value not in allowed
                and LATIN_WORD.search(value) and not CJK.search(value)}
        if same:
            leaks[str(page)] = sorted(same)
    assert not leaks, "Untranslated interface text on Chinese pages:\n" + "\n".join(
        f"{p}: {s}" for p, s in leaks.items())


# -- Executed recipes and notebooks ------------------------------------------

TIMING = {
    "en": re.compile(r"Total running time of the script:\s*\(\s*(\d+) minutes ([\d.]+) seconds\)"),
    "zh": re.compile(r"脚本总运行时间：\s*(\d+) 分 ([\d.]+) 秒"),
}


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_page_reports_a_running_time(smoke_site, lang, name):
    timing = read_html(recipe_page(smoke_site, lang, name)).select("p.sphx-glr-timing")
    assert len(timing) == 1, f"{lang}/{name}: no sphx-glr-timing paragraph (was it executed?)"
    match = TIMING[lang].search(timing[0].get_text())
    assert match, f"{lang}/{name}: unexpected timing text {timing[0].get_text()!r}"
    assert int(match[1]) * 60 + float(match[2]) > 0, f"{lang}/{name}: {timing[0].get_text()!r}"


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_executed_page_shows_output(smoke_site, lang, name):
    """The build ran the recipe: its page shows what it printed."""
    outputs = script_outputs(read_html(recipe_page(smoke_site, lang, name)))
    source = recipe_source(lang, name).read_text(encoding="utf-8")
    if re.search(r"^\s*print\(", source, re.M):
        assert outputs and any(o.strip() for o in outputs), f"{lang}/{name} prints, but its page shows no output"


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_notebook_starts_with_a_setup_cell(smoke_site, lang, name):
    notebook = nbformat.read(find_download(smoke_site, lang, f"{name}.ipynb"), as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    first = notebook.cells[0]
    assert first.cell_type == "code", first
    assert re.search(r"^%matplotlib inline$", first.source, re.M), first.source
    assert re.search(r"^# ?%pip install .*\btorch\b.*\btorchvision\b", first.source, re.M), first.source
    if lang == "zh":
        comments = [line for line in first.source.splitlines() if line.startswith("#") and "pip" not in line]
        assert comments and all(CJK.search(line) for line in comments), first.source


# -- What readers must never see ------------------------------------------------

BUILD_INTERNALS = re.compile(
    r"Traceback \(most recent call last\)|\b\w*Warning: |" + re.escape(str(REPO))
    + r"|" + re.escape(str(Path.home())) + r"/|/tmp/|site-packages|\.venv/"
)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_no_warning_traceback_or_build_path_on_any_page(smoke_site, lang):
    """Printed output is shown as it is: a warning, traceback or build path in it is a bug."""
    found = {}
    for page in tree_pages(smoke_site, lang):
        soup = read_html(smoke_site / lang / page)
        for text in [*script_outputs(soup), (soup.select_one("article") or soup).get_text()]:
            if m := BUILD_INTERNALS.search(text):
                found[str(page)] = text[max(0, m.start() - 80):m.end() + 80]
    assert not found, f"build internals shown to readers: {found}"


def test_translation_records_stay_invisible(smoke_site):
    """The record of the translated English version is for translators only."""
    for page in tree_pages(smoke_site, "zh"):
        assert "English text" not in read_html(smoke_site / "zh" / page).get_text(), page
    for name in RECIPE_NAMES:
        notebook = find_download(smoke_site, "zh", f"{name}.ipynb").read_text(encoding="utf-8")
        assert "English text" not in notebook and "sphinx_gallery" not in notebook, name


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_page_has_a_favicon(smoke_site, lang):
    for page in [Path("../index.html"), *tree_pages(smoke_site, lang)]:
        path = (smoke_site / lang / page).resolve()
        icons = read_html(path).select('link[rel="icon"]')
        assert icons, f"{page} has no favicon link"
        assert (path.parent / icons[0]["href"]).is_file(), f"{page}: {icons[0]['href']} does not exist"


# -- What each page ran on ----------------------------------------------------------

EXECUTED_ON = {
    "en": re.compile(r"^Executed on (\d{4}-\d\d-\d\d) with torch (\S+) and torchvision (\S+), on (.+) "
                     r"\((?:CPU, torch CPU capability (\w+)(?:, oneDNN limited to \w+)?, (\d+) threads?"
                     r"|GPU, CUDA (\S+))\)\. The numbers and plots on this page come from that run; another CPU "
                     r"capability, number of threads or device rounds differently and can print other numbers\.$"),
    "zh": re.compile(r"^运行于 (\d{4}-\d\d-\d\d)，使用 torch (\S+) 和 torchvision (\S+)，设备：(.+)"
                     r"（(?:CPU，torch 的 CPU 指令集级别 (\w+)(?:，oneDNN 限于 \w+)?，(\d+) 个线程"
                     r"|GPU，CUDA (\S+))）。本页的数字和图都来自这次运行；换一种 CPU 指令集级别、线程数或设备，"
                     r"舍入方式不同，打印的数字也可能不同。$"),
}


@pytest.fixture(scope="module")
def versions():
    import torch
    import torchvision

    return torch.__version__, torchvision.__version__, torch.backends.cpu.get_cpu_capability(), torch.version.cuda


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_page_says_what_it_ran_on(smoke_site, versions, lang, name):
    """Versions, and what decides the numbers: the CPU's kernels and threads (or the GPU)."""
    soup = read_html(recipe_page(smoke_site, lang, name))
    record = soup.select("p.sphx-glr-executed-on")
    assert len(record) == 1, f"{lang}/{name}: no execution record"
    match = EXECUTED_ON[lang].match(" ".join(record[0].get_text().split()))
    assert match, record[0].get_text()
    date, torch_version, torchvision_version, device, capability, threads, cuda = match.groups()
    assert (torch_version, torchvision_version) == versions[:2]
    built = (smoke_site / lang / "index.html").stat().st_mtime
    assert abs(datetime.date.fromisoformat(date) - datetime.date.fromtimestamp(built)).days <= 1
    assert device.strip()
    if cuda is None:  # on a CPU: the kernels torch picked here, and the build's one thread
        assert (capability, threads) == (versions[2], "1"), record[0].get_text()
    else:
        assert cuda == versions[3], record[0].get_text()
    # Next to the running time, in the same footer.
    assert record[0].find_previous_sibling("p", class_="sphx-glr-timing") is not None


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_figures_are_sharp_on_high_density_screens(smoke_site, lang, name):
    page = recipe_page(smoke_site, lang, name)
    figures = [img for img in read_html(page).select("article img") if f"sphx_glr_{name}_0" in img["src"]]
    for img in figures:
        candidates = dict(reversed(c.split()) if " " in c.strip() else ("1x", c.strip())
                          for c in img.get("srcset", "").split(","))
        density = [d for d in candidates if d.endswith("x") and float(d[:-1]) >= 2]
        assert density, f"{lang}/{name}: {img['src']} has no 2x image"
        assert (page.parent / candidates[density[0]]).is_file()


# -- Chinese typography ---------------------------------------------------------------

FULL_WIDTH_PUNCTUATION = "\u3000-\u303f\uff00-\uffef"
HAN = "\u4e00-\u9fff"
BAD_SPACING = re.compile(
    f"[{FULL_WIDTH_PUNCTUATION}][ \t\n]+\\S|\\S[ \t\n]+[{FULL_WIDTH_PUNCTUATION}]|[{HAN}][ \t\n]+[{HAN}]"
    # and half-width punctuation ending a Chinese phrase
    f"|[{HAN}][,;:?!](?![^ \t\n{HAN}])"
)
PROSE = "article p, article li, article dt, article dd, article td, article th, article h1, article h2, article h3"


def prose_text(tag):
    """The text of a prose element, with code and inline images standing in as a Latin word."""
    tag = BeautifulSoup(str(tag), "html.parser")
    for code in tag.select("code, kbd, samp, img, span.math"):
        code.replace_with("X")
    for block in tag.select("pre, div.highlight, ul, ol, table, p, li"):  # nested blocks are checked on their own
        if block is not tag.contents[0]:
            block.decompose()
    return tag.get_text()


def test_chinese_prose_has_no_stray_spaces_or_italics(smoke_site):
    """No space next to full-width punctuation or between two Chinese characters; no slanted Chinese."""
    problems = []
    for page in tree_pages(smoke_site, "zh"):
        soup = read_html(smoke_site / "zh" / page)
        texts = [prose_text(tag) for tag in soup.select(PROSE)]
        # What Sphinx-Gallery writes around a recipe, file names and all.
        texts += [tag.get_text() for tag in soup.select(".sphx-glr-download, .sphx-glr-timing, .sphx-glr-executed-on")]
        problems += [f"{page}: {text[max(0, m.start() - 12):m.end() + 12]!r}"
                     for text in texts for m in BAD_SPACING.finditer(text)]
        problems += [f"{page}: italic {em.get_text()!r}" for em in soup.select("article em, article i")
                     if CJK.search(em.get_text())]
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_gallery_cards_show_plain_text(smoke_site, lang):
    """The hover text of a card is read as it is: no reST markup or label names."""
    cards = read_html(gallery_index(smoke_site, lang)).select(".sphx-glr-thumbcontainer")
    assert len(cards) == len(RECIPE_NAMES)
    for card in cards:
        text = card["tooltip"]
        assert not re.search(r"`|\*\*|:ref:|:doc:|\\", text), text
        assert not [name for name in RECIPE_NAMES if re.search(rf"\b{name}\b", text)], text
        if lang == "zh":
            assert not BAD_SPACING.search(text), text


def test_the_checks_of_chinese_typography_can_fail():
    assert BAD_SPACING.search("梯度， x") and BAD_SPACING.search("梯度 写入") and BAD_SPACING.search("x ，")
    assert BAD_SPACING.search("用哪一个? 梯度") and BAD_SPACING.search("梯度,清零")
    assert not BAD_SPACING.search("调用 X 之后，梯度清零。用 GPU 计算")
    snippet = BeautifulSoup("<p>清零，\n<code>x</code> 写入</p>", "html.parser").p
    assert prose_text(snippet) == "清零，\nX 写入"


# -- Chinese code spans, cross-references and commas -----------------------------------
# docutils closes ``code`` only before whitespace or certain punctuation, and
# full-width （「《 are not among them; it opens ``code`` only after whitespace
# or certain punctuation, and ） is not among them. Without an escaped space
# (``None``\ （…）) a code span runs on to the next ``, swallowing the Chinese
# text between them, and a span that never opens leaves its `` in the text.

CHINESE_TEXT = re.compile(f"[\u3400-\u9fff\uf900-\ufaff{FULL_WIDTH_PUNCTUATION}]")


def visible_strings(soup, skip=("code", "pre", "script", "style", "kbd", "samp")):
    """The text nodes a reader sees, outside ``skip`` and printed output."""
    soup = BeautifulSoup(str(soup), "html.parser")  # work on a copy
    for tag in soup(list(skip)):
        tag.decompose()
    for tag in soup.select(".highlight, .sphx-glr-script-out"):
        tag.decompose()
    return [s for s in soup.find_all(string=True)
            if not isinstance(s, (Comment, Declaration, Doctype, ProcessingInstruction))]


def broken_code_spans(soup):
    """Inline code holding Chinese text or ``, and `` shown outside code, on one page."""
    problems = [f"<code>{code.get_text()!r}" for code in soup.find_all("code")
                if code.find_parent("pre") is None
                # Sphinx-Gallery sets its download labels (下载 Python 源代码：x.py) as code
                and "download" not in code.get("class", [])
                and (CHINESE_TEXT.search(code.get_text()) or "``" in code.get_text())]
    problems += [f"text {' '.join(s.split())!r}" for s in visible_strings(soup) if "``" in s]
    return problems


def page_titles(site, lang):
    """The title (h1) of every page of a language tree."""
    titles = set()
    for page in tree_pages(site, lang):
        h1 = read_html(site / lang / page).select_one("article h1")
        if h1 is not None:
            for link in h1.select("a.headerlink"):
                link.decompose()
            titles.add(" ".join(h1.get_text().split()))
    return titles


def unmarked_titles(text, titles):
    """Each occurrence in ``text`` of one of ``titles`` that 《》 do not enclose.

    An occurrence inside a longer title is that title's, and a title that is the
    whole of ``text`` (a link on its own line) needs no marks.
    """
    found, taken = [], set()
    for title in sorted(titles, key=len, reverse=True):
        for m in re.finditer(re.escape(title), text):
            if taken & set(range(m.start(), m.end())):
                continue
            taken |= set(range(m.start(), m.end()))
            if text.strip() != title and (text[:m.start()][-1:] != "《" or text[m.end():][:1] != "》"):
                found.append(text[max(0, m.start() - 12):m.end() + 12])
    return found


LINK = "\x02"


def unmarked_cross_references(soup, titles):
    """Links in a Chinese page's prose that name a page by its title without 《》 around it."""
    article = BeautifulSoup(str(soup.select_one("article") or soup), "html.parser")
    for a in article.select("a.reference.internal"):
        if " ".join(a.get_text().split()) in titles:
            a.replace_with(LINK + " ".join(a.get_text().split()) + LINK)
    problems = []
    for block in article.select(PROSE):
        text = prose_text(block)
        for m in re.finditer(f"{LINK}([^{LINK}]*){LINK}", text):
            around = text[:m.start()].rstrip()[-1:] + text[m.end():].lstrip()[:1]
            if text.replace(LINK, "").strip() != m[1] and around != "《》":
                problems.append(text[max(0, m.start() - 12):m.end() + 12].replace(LINK, ""))
    return problems


# A half-width comma, semicolon or colon next to Chinese text: Sphinx-Gallery joins
# a figure's titles with ", " into its alt text, and "2026, " came before the
# project's name in the footer.
HALF_WIDTH_BY_CHINESE = re.compile(f"[{HAN}{FULL_WIDTH_PUNCTUATION}][ \t\n]*[,;:]|[,;:][ \t\n]*[{HAN}]")


def half_width_commas(soup):
    """Half-width , ; : next to Chinese in a page's text (outside code), alt texts and tooltips."""
    texts = [" ".join(s.split()) for s in visible_strings(soup)]
    texts += [tag[name] for tag in soup.find_all(True) for name in ("alt", "tooltip", *UI_ATTRIBUTES)
              if tag.get(name)]
    texts += [prose_text(tag) for tag in soup.select(PROSE)]  # code stands in as a Latin word
    return sorted({text[max(0, m.start() - 12):m.end() + 12]
                   for text in texts for m in HALF_WIDTH_BY_CHINESE.finditer(text)})


def test_chinese_pages_have_no_broken_code_spans(smoke_site):
    problems = [f"{page}: {problem}" for page in tree_pages(smoke_site, "zh")
                for problem in broken_code_spans(read_html(smoke_site / "zh" / page))]
    assert not problems, "inline code swallowed Chinese text (write ``code``\\ （…）):\n" + "\n".join(problems)


def test_chinese_cross_references_mark_page_titles(smoke_site):
    """A page title linked in a Chinese sentence, or named in a card's tooltip, is set in 《》."""
    titles = page_titles(smoke_site, "zh")
    assert {"术语表", "有意地累积梯度"} <= titles, titles
    problems = [f"{page}: {problem!r}" for page in tree_pages(smoke_site, "zh")
                for problem in unmarked_cross_references(read_html(smoke_site / "zh" / page), titles)]
    problems += [f"card tooltip: {problem!r}"
                 for card in read_html(gallery_index(smoke_site, "zh")).select(".sphx-glr-thumbcontainer")
                 for problem in unmarked_titles(card["tooltip"], titles)]
    assert not problems, "page titles without 《》 (write 《:ref:`label`》):\n" + "\n".join(problems)


def test_chinese_pages_have_no_half_width_commas_between_chinese(smoke_site):
    """Footer, figure alt texts, tooltips and prose of Chinese pages use full-width punctuation."""
    problems = [f"{page}: {problem!r}" for page in tree_pages(smoke_site, "zh")
                for problem in half_width_commas(read_html(smoke_site / "zh" / page))]
    assert not problems, "\n".join(sorted(set(problems)))
    footer = read_html(smoke_site / "zh" / "index.html").select_one("p.copyright").get_text()
    assert " ".join(footer.split()) == "© 2026 梯度清零实践项目组", footer


def test_the_checks_of_chinese_code_links_and_commas_can_fail():
    """Each check finds the defect it is for in a small page, and passes the corrected page."""
    def page(body):
        return BeautifulSoup(f"<html><body><article>{body}</article></body></html>", "html.parser")

    # What docutils makes of ``None``（传入 ``x`` 时） and 。）``make_model`` 会.
    broken = page('<p>设为 <code class="docutils literal"><span class="pre">None``（传入</span> '
                  '<span class="pre">``x</span></code> 时）。</p><p>数据集。）``make_model`` 会先设置种子。</p>')
    assert len(broken_code_spans(broken)) == 2, broken_code_spans(broken)
    fixed = page('<p>设为 <code class="docutils literal">None</code>（传入 <code>x</code> 时）。</p>'
                 '<p>下载：<code class="xref download docutils literal">下载 Python 源代码：x.py</code></p>'
                 '<pre>print("``")</pre>')
    assert broken_code_spans(fixed) == []

    titles = {"有意地累积梯度", "术语表", "zero_grad() 该放在哪里，它又不能做什么"}
    link = '<a class="reference internal" href="g.html#g"><span class="std std-ref">{}</span></a>'
    unmarked = page(f"<p>规则本身见 {link.format('有意地累积梯度')}，术语见《{link.format('术语表')}》。</p>")
    assert unmarked_cross_references(unmarked, titles) == ["规则本身见 有意地累积梯度，术语见《术语表》。"]
    marked = page(f"<ul><li><p>见《{link.format('有意地累积梯度')}》。</p></li>"
                  f"<li><p>{link.format('术语表')}</p></li><li><p>{link.format('跳到页尾')}下载。</p></li></ul>")
    assert unmarked_cross_references(marked, titles) == []
    assert unmarked_titles("再加上梯度累积（有意地累积梯度），就多出", titles)
    assert unmarked_titles("见《zero_grad() 该放在哪里，它又不能做什么》", titles) == []

    commas = page('<p><img alt="全部 1,000 次迭代, 前 50 次迭代" src="a.png"/></p>'
                  '<div class="sphx-glr-thumbcontainer" tooltip="调用 x; 然后"></div>'
                  '<footer><p class="copyright">© 2026, 梯度清零实践项目组</p></footer>')
    assert len(half_width_commas(commas)) == 3, half_width_commas(commas)
    full_width = page('<p><img alt="全部 1,000 次迭代；SGD, momentum=0.9" src="a.png"/>'
                      '<code>f(a, b)</code>，<code>x</code>, <code>y</code> 和 z。</p>'
                      '<footer><p class="copyright">© 2026 梯度清零实践项目组</p></footer>')
    assert half_width_commas(full_width) == []


# -- Chinese search under other names --------------------------------------------------
# What readers type instead of the glossary's terms, and a page that must come up.
OTHER_NAMES_SEARCHED = {"梯度归零": "gradients_accumulate", "梯度置零": "zero_grad_pitfalls",
                        "梯度清零": "zeroing_out_gradients",
                        "梯度累加": "gradient_accumulation", "梯度累计": "gradient_accumulation"}


def search_index(site, lang):
    """The index Sphinx's search page reads: searchindex.js is ``Search.setIndex({...})``."""
    text = (site / lang / "searchindex.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("(") + 1:text.rindex(")")])


def pages_indexed_under(index, term):
    """The pages whose text or title the search index files under ``term`` (one whole search term)."""
    pages = set()
    for kind in ("terms", "titleterms"):
        found = index[kind].get(term, [])
        pages |= {index["docnames"][i] for i in ([found] if isinstance(found, int) else found)}
    return pages


def test_chinese_search_finds_pages_under_other_names(smoke_site):
    """A search for 梯度归零 finds the glossary and the pages that say 清零 (docs/_ext/chinese_search_synonyms.py)."""
    index = search_index(smoke_site, "zh")
    for name, page in OTHER_NAMES_SEARCHED.items():
        found = pages_indexed_under(index, name)
        assert {"glossary", page} <= found, f"searching for {name} finds {sorted(found)}"
    # the English site is left as it is
    assert not pages_indexed_under(search_index(smoke_site, "en"), "梯度归零")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_notebooks_show_no_escaped_spaces(smoke_site, lang):
    """The reST escaped space next to inline code (``None``\\ （…）) is nothing; Markdown would show a backslash."""
    shown = [f"{name}: {line.strip()[:80]!r}" for name in RECIPE_NAMES
             for cell in nbformat.read(find_download(smoke_site, lang, f"{name}.ipynb"), as_version=4).cells
             if cell.cell_type == "markdown" for line in cell.source.splitlines() if "\\ " in line]
    assert not shown, "\n".join(shown)
