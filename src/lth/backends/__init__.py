"""Execution backends for studies: where the trials run.

``local`` (this process, vectorised where possible), ``process`` (a local process pool) and
``ray`` (Ray Core tasks on a cluster). Every backend runs :func:`~lth.backends.base.run_trial`
on each trial, so the results are the same on all of them.
"""
from __future__ import annotations

from typing import Any

from lth.backends.base import Backend, Events, TrialResult, TrialSpec, run_trial
from lth.errors import LthError

BACKENDS = ("local", "process", "ray")
_OPTIONS = {"local": {"group"}, "process": {"workers", "max_retries"},
            "ray": {"address", "cpus_per_trial", "gpus_per_trial", "shared_fs", "max_retries"}}
_FLAGS = {"workers": "--workers", "address": "--ray-address", "cpus_per_trial": "--cpus-per-trial",
          "gpus_per_trial": "--gpus-per-trial", "shared_fs": "--no-shared-fs", "group": "--vectorize",
          "max_retries": "max_retries"}


def get_backend(name: str, **options: Any) -> Backend:
    """The backend called ``name`` with its options (None values are left out); LthError for a misuse."""
    key = (name or "local").strip().lower()
    if key not in BACKENDS:
        raise LthError(f"unknown backend {name!r}: use local, process or ray")
    options = {k: v for k, v in options.items() if v is not None}
    for option in options:
        if option not in _OPTIONS[key]:
            users = [b for b in BACKENDS if option in _OPTIONS[b]]
            raise LthError(f"{_FLAGS.get(option, option)} applies to the {' and '.join(users) or 'no'} backend, "
                           f"not to {key}")
    if key == "local":
        from lth.backends.local import LocalBackend

        return LocalBackend(**options)
    if key == "process":
        from lth.backends.process import ProcessBackend

        return ProcessBackend(**options)
    from lth.backends.ray_backend import RayBackend

    return RayBackend(**options)


__all__ = ["BACKENDS", "Backend", "Events", "TrialResult", "TrialSpec", "get_backend", "run_trial"]
