"""Links of the smoke-mode site: every internal link and anchor resolves; external ones answer.

The internal check reads every HTML page of both trees (and the language
chooser at the top): each relative ``href``/``src``/``srcset`` must name an
existing file inside the site, and each ``#fragment`` an element id of its
target page. The external check (``make linkcheck-external``) asks each
external URL once.
"""

import posixpath
import re
import urllib.error
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from conftest import LANGUAGES
from test_site import read_html, tree_pages

pytestmark = pytest.mark.site  # needs the smoke-mode site (or builds one)


# Tag attributes that point at another resource.
LINK_ATTRIBUTES = ("href", "src", "srcset", "data-src", "poster", "action")


def all_pages(site):
    """Every HTML page of the site: the language chooser and both trees."""
    return [site / "index.html"] + [site / lang / page for lang in LANGUAGES for page in tree_pages(site, lang)]


def page_links(page):
    """(tag name, attribute, URL) for every link-like attribute of one page."""
    for tag in read_html(page).find_all(True):
        for attribute in LINK_ATTRIBUTES:
            value = tag.get(attribute)
            if value is None:
                continue
            if attribute == "srcset":
                for candidate in value.split(","):
                    if candidate.strip():
                        yield tag.name, attribute, candidate.split()[0]
            else:
                yield tag.name, attribute, value.strip()


def is_external(url):
    return bool(urlsplit(url).scheme or url.startswith("//"))


def element_ids(page, cache={}):  # noqa: B006  (a per-process cache of parsed pages)
    if page not in cache:
        soup = read_html(page)
        cache[page] = ({tag["id"] for tag in soup.find_all(id=True)}
                       | {tag["name"] for tag in soup.find_all("a", attrs={"name": True})})
    return cache[page]


def test_internal_links_and_anchors_resolve(smoke_site):
    site = smoke_site.resolve()
    broken = []
    checked = 0
    for page in all_pages(site):
        where = page.relative_to(site)
        for tag, attribute, url in page_links(page):
            if is_external(url) or url.startswith(("mailto:", "javascript:", "data:", "tel:")):
                continue
            parts = urlsplit(url)
            if parts.path:
                target = Path(posixpath.normpath(posixpath.join(str(page.parent), unquote(parts.path))))
            else:
                target = page  # "#id" or "?query" on the same page
            checked += 1
            if site not in target.parents and target != site:
                broken.append(f"{where}: <{tag} {attribute}={url!r}> leaves the site")
            elif target.is_dir():
                if not (target / "index.html").is_file():
                    broken.append(f"{where}: <{tag} {attribute}={url!r}> is a folder without index.html")
            elif not target.is_file():
                broken.append(f"{where}: <{tag} {attribute}={url!r}> does not exist")
            elif parts.fragment and target.suffix == ".html":
                fragment = unquote(parts.fragment)
                if fragment not in element_ids(target):
                    broken.append(f"{where}: <{tag} {attribute}={url!r}>: "
                                  f"no id {fragment!r} in {target.relative_to(site)}")
    assert checked > 100, f"only {checked} internal links found: is the site complete?"
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken)


def test_no_page_is_unreachable(smoke_site):
    """Every page of a tree is linked from some other page of that tree."""
    site = smoke_site.resolve()
    for lang in LANGUAGES:
        pages = {site / lang / p for p in tree_pages(site, lang)}
        linked = set()
        for page in pages:
            for _, attribute, url in page_links(page):
                if attribute == "href" and not is_external(url) and urlsplit(url).path:
                    linked.add(Path(posixpath.normpath(posixpath.join(str(page.parent), unquote(urlsplit(url).path)))))
        orphans = sorted(str(p.relative_to(site)) for p in pages - linked - {site / lang / "index.html"})
        assert not orphans, f"pages no other page links to: {orphans}"


# -- External links -----------------------------------------------------------


def external_urls(site):
    """{URL without fragment: [pages that link it]} over the whole site."""
    urls = defaultdict(list)
    for page in all_pages(site):
        for _, _, url in page_links(page):
            if url.startswith(("http://", "https://", "//")):
                url = ("https:" + url if url.startswith("//") else url).split("#")[0]
                urls[url].append(str(page.relative_to(site)))
    return urls


def fetch_status(url, timeout=15):
    """HTTP status of ``url``: HEAD first, GET when a server refuses HEAD; an error string on failure."""
    headers = {"User-Agent": "zero-grad-recipes-linkcheck/1.0 (+python urllib)"}
    for method in ("HEAD", "GET"):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers),
                                        timeout=timeout) as response:
                return response.status
        except urllib.error.HTTPError as error:
            if method == "HEAD" and error.code in (403, 405, 501):
                continue
            return error.code
        except (urllib.error.URLError, OSError) as error:
            return f"{type(error).__name__}: {error}"
    return "no answer"


@pytest.mark.external
def test_external_links_answer(smoke_site):
    urls = external_urls(smoke_site.resolve())
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = dict(zip(urls, pool.map(fetch_status, urls)))
    failed = {url: status for url, status in statuses.items()
              if not (isinstance(status, int) and status < 400)
              and not re.match(r"https?://(127\.0\.0\.1|localhost)\b", url)}
    assert not failed, "external links that do not answer:\n" + "\n".join(
        f"{url}: {status} (on {', '.join(sorted(set(urls[url]))[:3])})" for url, status in failed.items())
