"""Progress bars: live tqdm bars on a terminal or in a notebook; plain lines in logs.

Redirected to a file (a batch job, CI), a live bar is a stream of carriage returns. There lth
writes one line per bar when it ends, plus a line at most every ``LOG_EVERY`` seconds while it
runs, so that a log of a long search stays readable.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.std import tqdm as plain_tqdm

LOG_EVERY = 60.0  # seconds between the lines of a bar that is still running


def progress_bar(*args: Any, **kwargs: Any) -> plain_tqdm:
    """A tqdm bar (same arguments) suited to where the output goes."""
    if kwargs.get("disable"):
        return plain_tqdm(*args, **kwargs)
    if _interactive():
        # Imported here: in a Jupyter kernel without ipywidgets, importing tqdm.auto warns.
        from tqdm.auto import tqdm as live_tqdm

        return live_tqdm(*args, **kwargs)
    return LogLines(*args, **kwargs)


def _interactive() -> bool:
    stream = sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return True
    shell = sys.modules.get("IPython")
    ipython = getattr(shell, "get_ipython", lambda: None)() if shell is not None else None
    return ipython is not None and "IPKernelApp" in getattr(ipython, "config", {})  # a Jupyter kernel


class LogLines(plain_tqdm):
    """A tqdm bar that writes whole lines: the final state when it closes, and the current state
    at most every ``LOG_EVERY`` seconds before that, each state once. No bar glyphs, no carriage
    returns."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["dynamic_ncols"] = False
        kwargs.setdefault("bar_format", "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}, {rate_fmt}{postfix}]")
        self._last_line = time.monotonic()  # the first line comes after LOG_EVERY seconds, or at the end
        self._printed: tuple = ()  # (count, postfix) of the last line: a state is written once
        self._closing = False
        super().__init__(*args, **kwargs)

    def display(self, msg: Any = None, pos: Any = None) -> bool:
        if msg is not None:  # tqdm clearing its line: nothing to clear here
            return False
        now, state = time.monotonic(), (self.n, self.postfix)
        if state == self._printed or (not self._closing and now - self._last_line < LOG_EVERY):
            return True
        self._last_line, self._printed = now, state
        self.fp.write(self.__str__().strip() + "\n")
        self.fp.flush()
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to clear: lines are never redrawn (``tqdm.write`` calls this)."""

    def close(self) -> None:
        if not self.disable and hasattr(self, "last_print_t"):
            self._closing = True
            self._ema_dt = lambda: None  # the final line gives the overall rate, as tqdm's own does
            self.display()  # the final state, once
            self.leave = False  # so that tqdm does not redraw it
        super().close()
