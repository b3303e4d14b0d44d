"""Where results live: the run directory layout."""
from lth.store.run_dir import RunDir, default_run_dir, output_dir

__all__ = ["RunDir", "default_run_dir", "output_dir"]
