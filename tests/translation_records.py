"""Which version of its English twin each Chinese page translates.

Every Chinese page (``recipes/zh/*.py``, ``recipes/zh/README.rst``,
``docs/zh/*.rst``) ends with a record of the English text it translates: a
fingerprint of its English twin's translatable text. For a recipe that is every
comment and string (prose, plot labels, and printed text, which the Chinese
copy must match); for a reST page, the whole file. Readers never see the
record: in a recipe it sits between Sphinx-Gallery's ``start_ignore`` and
``end_ignore`` flags, which keep it off the page and out of the notebook; in a
reST page it is a comment.

When the English changes, the record no longer matches and
``test_translations.py`` fails with the English diff since the recorded
version, looked up in git history. After updating the translation::

    make translation-record PAGE=recipes/zh/NAME.py
    make translation-status          # every page's state
"""

import difflib
import hashlib
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORD_TEXT = "Translates {english}, English text {fingerprint} (make translation-status)"
RECORD = re.compile(r"Translates (\S+), English text ([0-9a-f]{16}) \(make translation-status\)")
PY_RECORD = "\n# sphinx_gallery_start_ignore\n# {}\n# sphinx_gallery_end_ignore\n"
RST_RECORD = "\n.. {}\n"


def chinese_pages():
    pages = [*sorted((REPO / "recipes" / "zh").glob("*.py")), *sorted((REPO / "recipes" / "zh").glob("*.rst")),
             *sorted((REPO / "docs" / "zh").glob("*.rst"))]
    return [page.relative_to(REPO) for page in pages]


def english_twin(page):
    """recipes/zh/x.py -> recipes/en/x.py; docs/zh/x.rst -> docs/en/x.rst."""
    return Path(page).parents[1] / "en" / Path(page).name


def translatable_text(text, suffix):
    """What a translator works from: a recipe's comments and strings, or a whole reST file."""
    if suffix != ".py":
        return text
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return "\n".join(t.string for t in tokens if t.type in (tokenize.COMMENT, tokenize.STRING))


def fingerprint(text, suffix):
    return hashlib.sha256(translatable_text(text, suffix).encode()).hexdigest()[:16]


def recorded_fingerprint(page):
    """The fingerprint a Chinese page records, or None."""
    found = RECORD.findall((REPO / page).read_text(encoding="utf-8"))
    return found[-1][1] if found else None


def record(page):
    """Record that ``page`` translates its English twin as it is now."""
    page = Path(page)
    english = english_twin(page)
    line = RECORD_TEXT.format(english=english.as_posix(),
                              fingerprint=fingerprint((REPO / english).read_text(encoding="utf-8"), english.suffix))
    path = REPO / page
    text = path.read_text(encoding="utf-8")
    if RECORD.search(text):
        text = RECORD.sub(line, text)
    else:
        text = text.rstrip("\n") + "\n" + (PY_RECORD if page.suffix == ".py" else RST_RECORD).format(line)
    path.write_text(text, encoding="utf-8")
    return line


def english_version(english, wanted):
    """The text of ``english`` at the newest commit whose fingerprint is ``wanted``, or None."""
    log = subprocess.run(["git", "log", "--format=%H", "--", str(english)], cwd=REPO,
                         capture_output=True, text=True)
    for commit in log.stdout.split()[:500]:
        shown = subprocess.run(["git", "show", f"{commit}:{english.as_posix()}"], cwd=REPO,
                               capture_output=True, text=True)
        if shown.returncode == 0 and fingerprint(shown.stdout, english.suffix) == wanted:
            return shown.stdout
    return None


def state(page):
    """(up to date?, a one-line state, what changed in the English since the record)."""
    english = english_twin(page)
    if not (REPO / english).exists():
        return False, f"no English twin {english}", ""
    recorded = recorded_fingerprint(page)
    current_text = (REPO / english).read_text(encoding="utf-8")
    current = fingerprint(current_text, english.suffix)
    if recorded is None:
        return False, "no record of the English version it translates", ""
    if recorded == current:
        return True, f"up to date with {english} ({current})", ""
    old_text = english_version(english, recorded)
    if old_text is None:
        changes = f"(the recorded version {recorded} is not in this clone's git history)\n"
    else:
        changes = "".join(difflib.unified_diff(
            old_text.splitlines(keepends=True), current_text.splitlines(keepends=True),
            f"{english} (translated, {recorded})", f"{english} (now, {current})", n=2))
    return False, f"{english} changed since the translated version {recorded}", changes


def main(args):
    if args[:1] == ["status"] and len(args) == 1:
        width = max(len(str(page)) for page in chinese_pages())
        outdated = 0
        for page in chinese_pages():
            current, summary, _ = state(page)
            outdated += not current
            print(f"{str(page):<{width}}  {'ok      ' if current else 'OUTDATED'}  {summary}")
        print(f"{outdated} of {len(chinese_pages())} Chinese pages need updating" if outdated
              else "Every Chinese page translates the current English.")
        return 0
    if args[:1] == ["record"] and len(args) == 2:
        page = Path(args[1])
        if page.is_absolute():
            page = page.relative_to(REPO)
        if page not in chinese_pages():
            print(f"{page} is not a Chinese page; one of:\n  " + "\n  ".join(map(str, chinese_pages())),
                  file=sys.stderr)
            return 2
        print(f"{page}: {record(page)}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
