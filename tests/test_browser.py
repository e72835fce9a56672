"""The smoke-mode site in a real browser: headless Chromium, driven by Playwright.

The site is served on 127.0.0.1 from a free port. Every page of both
languages must load without console errors, failed requests or requests to
other hosts, and show all its images; the language switch must lead to the
same page in the other language and back; search must find pages in both
languages; every download link must deliver its file. Full-page screenshots of
the landing and flagship pages go to ``_build/screenshots/`` for a person to
look at.

Uses the Debian ``chromium`` package (``CHROMIUM`` overrides the path); never a
browser downloaded by Playwright.
"""

import functools
import http.server
import os
import re
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import pytest

from conftest import LANGUAGES, RECIPE_NAMES, REPO

sys.path.insert(0, str(REPO / "docs" / "_ext"))
import chinese_font  # noqa: E402
from test_site import gallery_index, gallery_zips, recipe_page, recipe_source, tree_pages

pytestmark = [pytest.mark.browser, pytest.mark.site]

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = REPO / "_build" / "screenshots"
FLAGSHIP = "zeroing_out_gradients"
# What a reader searches for in each language, and must find on some recipe page.
SEARCH_TERMS = {"en": "gradient", "zh": "梯度"}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A page that navigates on (the top-level index's redirect) may close a
        # connection before its file is sent: the browser's choice, not a
        # server error worth a traceback in the test log.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def site_url(smoke_site):
    """Base URL (ending in /) of the smoke site served on 127.0.0.1."""
    handler = functools.partial(QuietHandler, directory=str(smoke_site))
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium that, like a Chinese reader's browser, has a font with Chinese glyphs.

    The page asks for Noto Sans CJK SC among others (docs/_static/site.css); on
    a machine without any CJK font, fontconfig is told about the pinned copy
    the figures use, so that screenshots show text instead of empty boxes.
    """
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    fonts_conf = tmp_path_factory.mktemp("fontconfig") / "fonts.conf"
    fonts_conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        f"  <dir>{chinese_font.font_path().parent}</dir>\n</fontconfig>\n")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             env={**os.environ, "FONTCONFIG_FILE": str(fonts_conf)})
        yield browser
        browser.close()


@pytest.fixture
def context(browser, site_url):
    """A fresh browser context that records every problem a reader could notice.

    ``context.problems`` collects console errors, uncaught exceptions, failed
    requests, HTTP errors and any request to a host other than the site's.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.problems = []
    site_host = urlsplit(site_url).netloc

    def route(route):
        url = route.request.url
        if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).netloc != site_host:
            context.problems.append(f"request to another host: {url}")
            route.abort()
        else:
            route.continue_()

    context.route("**/*", route)

    def watch(page):
        page.on("console", lambda message: message.type == "error" and context.problems.append(
            f"console error on {page.url}: {message.text}"))
        page.on("pageerror", lambda error: context.problems.append(f"uncaught error on {page.url}: {error}"))
        page.on("requestfailed", lambda request: context.problems.append(
            f"request failed from {page.url}: {request.url} ({request.failure})"))
        page.on("response", lambda response: response.status >= 400 and context.problems.append(
            f"HTTP {response.status} from {page.url}: {response.url}"))

    context.on("page", watch)
    yield context
    context.close()


# Text that style sheets draw (::before and ::after), which the HTML does not show.
CSS_TEXT_JS = """
() => {
  const found = new Set();
  for (const element of document.querySelectorAll("body *")) {
    for (const pseudo of ["::before", "::after"]) {
      for (const text of getComputedStyle(element, pseudo).content.match(/"[^"]*"/g) || []) {
        if (/[A-Za-z]{2,}/.test(text)) found.add(`${element.className || element.tagName}${pseudo}: ${text}`);
      }
    }
  }
  return [...found];
}
"""


# Makes every image load now (lazy ones too) and returns those that show nothing.
BROKEN_IMAGES_JS = """
async () => {
  const images = Array.from(document.images);
  images.forEach(image => { image.loading = "eager"; });
  await Promise.race([
    Promise.all(images.map(image => image.complete ? null : new Promise(done => {
      image.addEventListener("load", done); image.addEventListener("error", done);
    }))),
    new Promise(done => setTimeout(done, 10000)),
  ]);
  await document.fonts.ready;
  return images.filter(image => !image.complete || image.naturalWidth === 0)
               .map(image => image.currentSrc || image.getAttribute("src"));
}
"""


def open_page(context, url, wait_until="networkidle"):
    page = context.new_page()
    response = page.goto(url, wait_until=wait_until)
    assert response is not None and response.status == 200, f"{url}: {response and response.status}"
    return page


def site_pages(smoke_site):
    """Every page of both language trees. The top-level index.html leaves for one of
    them as it loads, which aborts its own request: the tests at the end check it."""
    return [f"{lang}/{page.as_posix()}" for lang in LANGUAGES for page in tree_pages(smoke_site, lang)]


def test_every_page_loads_cleanly_and_shows_its_images(smoke_site, site_url, context):
    broken = []
    pages = site_pages(smoke_site)
    for path in pages:
        page = open_page(context, site_url + path)
        broken += [f"{path}: image {src} does not show" for src in page.evaluate(BROKEN_IMAGES_JS)]
        if path.startswith("zh/"):
            broken += [f"{path}: English drawn by CSS: {text}" for text in page.evaluate(CSS_TEXT_JS)]
        page.close()
    assert len(pages) > 10, pages
    assert not context.problems + broken, "\n".join(context.problems + broken)


def test_figures_are_drawn(smoke_site, site_url, context):
    """Every recipe page shows its figures at a readable size."""
    small = []
    for lang in LANGUAGES:
        for name in RECIPE_NAMES:
            path = recipe_page(smoke_site, lang, name).relative_to(smoke_site).as_posix()
            page = open_page(context, site_url + path)
            page.evaluate(BROKEN_IMAGES_JS)
            for image in page.query_selector_all("article img.sphx-glr-single-img, article img.sphx-glr-multi-img"):
                width = image.evaluate("image => image.naturalWidth")
                if width < 200 or image.bounding_box() is None or image.bounding_box()["width"] < 200:
                    small.append(f"{path}: {image.get_attribute('src')} is {width} px wide, "
                                 f"shown at {image.bounding_box()}")
            page.close()
    assert not small, "\n".join(small)


def click_language_switch(page):
    switch = page.locator("a.language-switch:visible").first
    with page.expect_navigation(wait_until="load"):
        switch.click()


def test_language_switch_leads_to_the_same_page_and_back(smoke_site, site_url, context):
    """English -> Chinese -> English from every page, so every switch of both trees is clicked."""
    lang, other = "en", "zh"
    wrong = []
    for page_path in tree_pages(smoke_site, lang):
        here = f"{site_url}{lang}/{page_path.as_posix()}"
        there = f"{site_url}{other}/{page_path.as_posix()}"
        page = open_page(context, here, wait_until="load")
        click_language_switch(page)
        if page.url != there:
            wrong.append(f"{lang}/{page_path} -> {page.url}, expected {there}")
        else:
            html_lang = page.evaluate("document.documentElement.lang")
            if not html_lang.startswith(other):
                wrong.append(f"{there} has lang={html_lang!r}")
            click_language_switch(page)
            if page.url != here:
                wrong.append(f"{there} -> {page.url}, expected {here} back")
        page.close()
    assert not wrong, "\n".join(wrong)


def search_results(context, site_url, lang, query):
    """(summary text, result URLs) of the theme's search page for ``query``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = open_page(context, f"{site_url}{lang}/search.html?q={quote(query)}")
    # Sphinx's search writes a summary paragraph when it has finished.
    try:
        page.wait_for_selector("#search-results p.search-summary", timeout=20000)
    except PlaywrightTimeout:
        page.close()
        return "the search never finished", []
    summary = page.inner_text("#search-results p.search-summary")
    links = [urljoin(page.url, href) for href in page.eval_on_selector_all(
        "#search-results ul.search li a[href]", "links => links.map(a => a.getAttribute('href'))")]
    page.close()
    return summary, links


@pytest.mark.parametrize("lang", LANGUAGES)
def test_search_finds_recipes(smoke_site, site_url, context, lang):
    query = SEARCH_TERMS[lang]
    summary, links = search_results(context, site_url, lang, query)
    recipe_urls = {site_url + recipe_page(smoke_site, lang, name).relative_to(smoke_site).as_posix()
                   for name in RECIPE_NAMES}
    found = {link.split("#")[0].split("?")[0] for link in links} & recipe_urls
    errors = [p for p in context.problems if "uncaught error" in p]
    hint = "\n".join(errors)
    if lang == "zh":
        hint += ("\nSphinx indexes Chinese words only when the jieba package is installed "
                 "(sphinx/search/zh.py); without it no Chinese term is in searchindex.js.")
    assert found, f"searching {lang} for {query!r} found no recipe: {summary!r} {links}\n{hint}"
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("query", ["梯度归零", "梯度累加"])
def test_chinese_search_finds_recipes_under_other_names(smoke_site, site_url, context, query):
    """The glossary's 其他说法 are search terms too (docs/_ext/chinese_search_synonyms.py)."""
    summary, links = search_results(context, site_url, "zh", query)
    recipe_urls = {site_url + recipe_page(smoke_site, "zh", name).relative_to(smoke_site).as_posix()
                   for name in RECIPE_NAMES}
    found = {link.split("#")[0].split("?")[0] for link in links} & recipe_urls
    assert found, f"searching zh for {query!r} found no recipe: {summary!r} {links}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_search_box_opens_the_search_page(site_url, context, lang):
    page = open_page(context, f"{site_url}{lang}/index.html")
    page.keyboard.press("Control+k")
    box = page.locator("#pst-search-dialog input[name=q]")
    box.wait_for(state="visible")
    box.fill(SEARCH_TERMS[lang])
    with page.expect_navigation(wait_until="networkidle"):
        box.press("Enter")
    assert urlsplit(page.url).path == f"/{lang}/search.html", page.url
    assert parse_qs(urlsplit(page.url).query).get("q") == [SEARCH_TERMS[lang]], page.url
    page.close()


# The file name each kind of download link must deliver, for a recipe NAME.
DOWNLOAD_SUFFIX = {"python": ".py", "jupyter": ".ipynb", "zip": ".zip"}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_download_links_deliver_their_files(smoke_site, site_url, context, lang):
    problems = []
    checked = 0
    for name in RECIPE_NAMES:
        path = recipe_page(smoke_site, lang, name).relative_to(smoke_site).as_posix()
        page = open_page(context, site_url + path)
        links = page.eval_on_selector_all("a[download]", """links => links.map(a => ({
            href: a.href, text: a.innerText.trim(),
            kind: (a.closest('[class*="sphx-glr-download-"]')?.className
                   .match(/sphx-glr-download-(python|jupyter|zip)/) || [])[1]
        }))""")
        page.close()
        kinds = {link["kind"] for link in links}
        if kinds != set(DOWNLOAD_SUFFIX):
            problems.append(f"{path}: download links for {sorted(k for k in kinds if k)}, "
                            f"expected {sorted(DOWNLOAD_SUFFIX)}")
        for link in links:
            filename = Path(urlsplit(link["href"]).path).name
            expected = name + DOWNLOAD_SUFFIX.get(link["kind"], "")
            if link["kind"] and filename != expected:
                problems.append(f"{path}: {link['kind']} link {link['href']} is not {expected}")
            if re.search(r"\.\w+$", link["text"]) and not link["text"].endswith(filename):
                problems.append(f"{path}: link {link['text']!r} delivers {filename}")
            response = context.request.get(link["href"])
            checked += 1
            local = smoke_site / urlsplit(link["href"]).path.lstrip("/")
            if response.status != 200 or not response.body():
                problems.append(f"{path}: {link['href']} answered {response.status} with {len(response.body())} bytes")
            elif response.body() != local.read_bytes():
                problems.append(f"{path}: {link['href']} is not the built {local}")
            elif filename == f"{name}.py" and response.body() != recipe_source(lang, name).read_bytes():
                problems.append(f"{path}: {filename} is not recipes/{lang}/{name}.py")
    gallery = gallery_index(smoke_site, lang)
    for archive in gallery_zips(smoke_site, lang).values():
        url = site_url + archive.relative_to(smoke_site.resolve()).as_posix()
        response = context.request.get(url)
        checked += 1
        if response.status != 200 or response.body()[:2] != b"PK":
            problems.append(f"{gallery.name}: {url} answered {response.status}, not a zip")
    assert checked >= 3 * len(RECIPE_NAMES) + 2
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_clicking_a_download_saves_the_recipe(smoke_site, site_url, context, lang, tmp_path):
    path = recipe_page(smoke_site, lang, FLAGSHIP).relative_to(smoke_site).as_posix()
    page = open_page(context, site_url + path)
    with page.expect_download() as download_info:
        page.locator(".sphx-glr-footer .sphx-glr-download-python a[download]").click()
    download = download_info.value
    assert download.suggested_filename == f"{FLAGSHIP}.py"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.read_bytes() == recipe_source(lang, FLAGSHIP).read_bytes()
    page.close()


def test_screenshots(smoke_site, site_url, context):
    """Full-page screenshots of the landing and flagship pages, for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = {}  # the top-level chooser only shows without JavaScript: see below
    for lang in LANGUAGES:
        shots[f"{lang}-landing"] = f"{lang}/index.html"
        shots[f"{lang}-flagship"] = recipe_page(smoke_site, lang, FLAGSHIP).relative_to(smoke_site).as_posix()
    for name, path in shots.items():
        page = open_page(context, site_url + path)
        assert not page.evaluate(BROKEN_IMAGES_JS)
        target = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 10_000, target
        page.close()


# -- The top-level index.html ------------------------------------------------------


@pytest.mark.parametrize("locale, expected", [("zh-CN", "zh"), ("zh-TW", "zh"), ("en-GB", "en"), ("fr-FR", "en")])
def test_top_level_index_opens_the_readers_language(browser, site_url, locale, expected):
    context = browser.new_context(locale=locale)
    page = context.new_page()
    page.goto(site_url + "index.html")
    page.wait_for_url(f"{site_url}{expected}/index.html", timeout=10000)
    context.close()


def test_top_level_index_remembers_the_readers_choice(browser, site_url):
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.goto(site_url + "en/index.html")
    click_language_switch(page)  # an English reader chooses Chinese
    page.goto(site_url + "index.html")
    page.wait_for_url(f"{site_url}zh/index.html", timeout=10000)
    click_language_switch(page)  # and back
    page.goto(site_url + "index.html")
    page.wait_for_url(f"{site_url}en/index.html", timeout=10000)
    context.close()


def test_top_level_index_works_without_javascript(browser, site_url):
    context = browser.new_context(locale="zh-CN", java_script_enabled=False)
    page = context.new_page()
    problems = []
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url} ({request.failure})"))
    page.on("response", lambda response: response.status >= 400 and problems.append(
        f"HTTP {response.status}: {response.url}"))
    page.goto(site_url + "index.html", wait_until="networkidle")
    assert page.url == site_url + "index.html"
    assert not problems, problems  # nothing the chooser loads fails
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chooser-without-javascript.png"), full_page=True)
    for lang in LANGUAGES:
        link = page.locator(f'a[href="{lang}/index.html"]')
        assert link.is_visible()
        with page.expect_navigation():
            link.click()
        assert page.url == f"{site_url}{lang}/index.html"
        page.go_back()
    context.close()
