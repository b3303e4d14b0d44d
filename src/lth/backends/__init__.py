"""Execution backends for studies: where the trials run.

``local`` (this process, vectorised where possible), ``process`` (a local process pool) and
``ray`` (Ray Core tasks on a cluster); ``auto`` (the default) picks one of the first two per
study with :func:`choose_backend`. Every backend runs :func:`~lth.backends.base.run_trial`
on each trial, so the results are the same on all of them.
"""

from __future__ import annotations

import os
from typing import Any

from lth.backends.base import Backend, Events, TrialResult, TrialSpec, run_trial
from lth.errors import LthError

BACKENDS = ("auto", "local", "process", "ray")
_OPTIONS = {
    "auto": {"workers", "group"},
    "local": {"group"},
    "process": {"workers", "max_retries"},
    "ray": {"address", "cpus_per_trial", "gpus_per_trial", "shared_fs", "max_retries"},
}
_FLAGS = {
    "workers": "--workers",
    "address": "--ray-address",
    "cpus_per_trial": "--cpus-per-trial",
    "gpus_per_trial": "--gpus-per-trial",
    "shared_fs": "--no-shared-fs",
    "group": "--vectorize",
    "max_retries": "max_retries",
}


ENV_VAR = "LTH_BACKEND"  # the backend of studies that do not name one


def backend_key(name: str | None) -> str:
    """``name`` normalised (None: ``$LTH_BACKEND``, else ``auto``); LthError naming the choices for an
    unknown one."""
    name = name or os.environ.get(ENV_VAR) or "auto"
    key = name.strip().lower()
    if key not in BACKENDS:
        raise LthError(f"unknown backend {name!r}: use auto, local, process or ray")
    return key


def check_options(name: str | None, options: dict[str, Any]) -> str:
    """The backend's key, after checking that every given option applies to it."""
    key = backend_key(name)
    for option, value in options.items():
        if value is not None and option not in _OPTIONS[key]:
            users = [b for b in BACKENDS if option in _OPTIONS[b] and b != "auto"]
            raise LthError(
                f"{_FLAGS.get(option, option)} applies to the {' and '.join(users) or 'no'} backend, not to {key}"
            )
    return key


def choose_backend(
    name: str | None, options: dict[str, Any], trials: int, gpu: bool, cpus: int | None = None
) -> tuple[str, dict[str, Any]]:
    """The concrete backend and options for ``name`` running ``trials`` trials.

    ``auto`` is the process backend, one worker per available CPU (at most one per trial), when
    there are at least 2 CPUs and 2 trials and the trials do not train on a GPU (``gpu``);
    ``local`` otherwise. ``--workers`` asks for the process backend and ``--vectorize`` N > 1
    for local. Other names are returned as they are.
    """
    options = {k: v for k, v in options.items() if v is not None}
    key = check_options(name, options)
    if key != "auto":
        return key, options
    if options.get("group", 1) > 1:
        return "local", options
    if "workers" in options:
        return "process", {k: v for k, v in options.items() if k != "group"}
    if cpus is None:
        from lth.cpus import available_cpus

        cpus = available_cpus()
    if gpu or cpus < 2 or trials < 2:
        return "local", options
    return "process", {"workers": min(cpus, trials)}


def get_backend(name: str | None, **options: Any) -> Backend:
    """The backend called ``name`` with its options (None values are left out); LthError for a misuse.

    ``name`` None means ``$LTH_BACKEND``, else ``auto``; ``auto`` picks as :func:`choose_backend`
    does for a single trial without a GPU (a study first chooses with its real counts).
    """
    options = {k: v for k, v in options.items() if v is not None}
    key = check_options(name, options)
    if key == "auto":
        key, options = choose_backend(key, options, trials=1, gpu=False)
    if key == "local":
        from lth.backends.local import LocalBackend

        return LocalBackend(**options)
    if key == "process":
        from lth.backends.process import ProcessBackend

        return ProcessBackend(**options)
    from lth.backends.ray_backend import RayBackend

    return RayBackend(**options)


__all__ = [
    "BACKENDS",
    "Backend",
    "Events",
    "TrialResult",
    "TrialSpec",
    "backend_key",
    "check_options",
    "choose_backend",
    "get_backend",
    "run_trial",
]
