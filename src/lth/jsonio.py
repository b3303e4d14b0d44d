"""JSON that every reader can parse: lth never writes ``NaN`` or ``Infinity``.

Python's :func:`json.dumps` writes non-finite floats as the bare words ``NaN``, ``Infinity`` and
``-Infinity``, which are not JSON (``jq``, JavaScript and most other parsers refuse them).
:func:`dumps` writes them as ``null`` instead, and is used for every JSON file and every
``--json`` output lth writes.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf) replaced by None, in nested dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(value) for value in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """:func:`json.dumps` of ``obj`` with non-finite floats as ``null`` (``allow_nan=False``).

    Keyword arguments go to :func:`json.dumps`; what a ``default`` function returns is made
    finite the same way.
    """
    kwargs.pop("allow_nan", None)
    default = kwargs.pop("default", None)
    if default is not None:
        kwargs["default"] = lambda value: finite(default(value))
    return json.dumps(finite(obj), allow_nan=False, **kwargs)
