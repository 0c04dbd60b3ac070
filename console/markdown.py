"""Model readmes as HTML, safely: CommonMark (plus tables) with raw HTML turned off.

markdown-it-py is already installed with `rich`. With `html: False` any HTML in the readme is shown as
text (escaped), and markdown-it's link validation refuses `javascript:`, `vbscript:`, `file:` and
non-image `data:` URLs. Readmes are written by ops or imported from an index URL, so they are treated as
untrusted.
"""

from __future__ import annotations

import functools

from markdown_it import MarkdownIt
from markupsafe import Markup


@functools.cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table")
    md.enable("strikethrough")
    return md


def render(text: str) -> Markup:
    # The parser escapes everything it does not turn into markup, so its output is safe to embed.
    return Markup(_parser().render(text or ""))
