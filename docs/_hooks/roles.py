"""MkDocs hook: lth's docstrings cross-reference with reST roles (``:func:`lth.find_ticket```),
which mkdocstrings renders as Markdown: the role's name would show as text before the code.
Keep the code, drop the role's name."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):(<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    """Remove the names of reST roles in front of inline code."""
    return _ROLE.sub(r"\1", html)
