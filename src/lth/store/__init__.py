"""Where results live: the run directory layout, and the results index kept in step with it."""

from lth.store import index  # noqa: F401,E402  (its index_run listens to every status write)
from lth.store.run_dir import RunDir, default_run_dir, output_dir

__all__ = ["RunDir", "default_run_dir", "output_dir"]
