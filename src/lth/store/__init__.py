"""Where results live: the run directory layout."""
from lth.store.run_dir import RunDir

__all__ = ["RunDir"]
