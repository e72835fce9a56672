"""Sphinx extension: readers never see build internals in printed output.

Printed output is copied onto the page as it is. A Python warning, a traceback
or a path of the machine that built the site there is a bug: it fails the
build (a warning, and the build runs with -W).
"""

import re
import sys
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
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


def setup(app):
    app.connect("source-read", check_printed_output)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
