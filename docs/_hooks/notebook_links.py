"""MkDocs hook: a notebook's images are linked relative to the ``.ipynb`` file (``../figures/x.png``
from ``docs/tutorials/``), which is right in Jupyter and on GitHub. With directory URLs the site
serves the notebook one folder deeper (``tutorials/01-first-ticket/``): add that one ``../``."""

from __future__ import annotations

import re
from typing import Any

_RELATIVE_IMG = re.compile(r'(<img\b[^>]*?\bsrc=")(?![a-z][a-z0-9+.-]*:|/|#)')


def on_page_content(html: str, page: Any, config: Any, **kwargs: Any) -> str:
    """Prefix the relative image sources of notebook pages with ``../``."""
    if not page.file.src_uri.endswith(".ipynb") or not config["use_directory_urls"]:
        return html
    return _RELATIVE_IMG.sub(r"\1../", html)
