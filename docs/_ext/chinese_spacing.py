"""Sphinx extension: whitespace that Chinese text drops, on Chinese pages.

Recipe prose is wrapped at about 80 columns, and reST wants whitespace around
inline markup (**强调**, ``code``). HTML renders both as a space, which
Chinese has only between Chinese and Latin text. So on Chinese pages, a line
break between two Chinese characters vanishes, and so does whitespace next to
full-width punctuation (which carries its own spacing) or between a Chinese
character and inline markup that starts or ends with one.

``drop_vanishing_spaces`` is the same rule for plain strings (the gallery's
card texts use it).
"""

import re

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform

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
        if not self.config.language.startswith("zh"):
            return
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


def setup(app):
    app.add_post_transform(JoinChineseText)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
