"""``lth resume RUN_DIR``: continue an interrupted run from its last checkpoint."""

from __future__ import annotations

from typing import Any

import click

from lth.cli.find_ticket import report
from lth.cli.main import cli
from lth.cli.study import backend_options, gather_backend
from lth.errors import LthError


@cli.command("resume")
@click.argument("run_dir")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (as `lth show --json`).")
@backend_options
def resume_command(run_dir: str, quiet: bool, as_json: bool, **kwargs: Any) -> None:
    """Continue the unfinished run in RUN_DIR (killed or interrupted) where its checkpoint left it.

    RUN_DIR may be a find-ticket run, a branch (RUN/branches/NAME), a stability analysis or a
    robust/session study (only its unfinished trials run, on --backend: a study started on Ray
    may be resumed locally and vice versa).

    The results are bit-identical (on CPU) to those of the same run never interrupted.

    Example: lth resume runs/lenet-300-100-mnist-20260101-120000
    """
    from lth.store import RunDir
    from lth.store.study_dir import StudyDir

    progress = not quiet and not as_json
    backend, backend_opts = gather_backend(kwargs)
    if StudyDir.is_study(run_dir):
        from lth.cli.study import report_study
        from lth.experiments.study import continue_study

        if StudyDir(run_dir).status().get("status") == "complete":
            raise LthError(f"study {run_dir!r} is already complete; nothing to resume")
        result = continue_study(run_dir, progress=progress, backend=backend, backend_options=backend_opts)
        report_study(result.study_dir, quiet, as_json)
        if progress and StudyDir(run_dir).study().get("kind") != "prune-at-init":  # its round 0 is not dense
            from lth.cli.study import dense_line

            click.echo(dense_line(result))
        return
    from lth.experiments.branches import is_branch, resume_branch
    from lth.experiments.stability import is_stability_run, resume_stability
    from lth.experiments.ticket_search import resume_ticket

    if is_stability_run(run_dir):
        from lth.cli.stability import report_stability, stability_workers

        extra = [key for key, value in backend_opts.items() if value is not None and key != "workers"]
        if extra:
            raise LthError("a stability run takes --backend local or process (and --workers), not the Ray options")
        workers = stability_workers(backend if backend not in (None, "auto") else "local", backend_opts.get("workers"))
        if RunDir(run_dir).status().get("status") == "complete":
            raise LthError(f"stability run {run_dir!r} is already complete; nothing to resume")
        report_stability(resume_stability(run_dir, progress=progress, workers=workers).run_dir, quiet, as_json)
        return
    if (backend is not None and backend.strip().lower() not in ("auto", "local")) or backend_opts:
        raise LthError(
            "--backend and its options apply to studies and stability runs; a single run resumes in this process"
        )
    if is_branch(run_dir):
        report(resume_branch(run_dir, progress=progress).run_dir, quiet, as_json)
        return

    report(resume_ticket(run_dir, progress=progress).run_dir, quiet, as_json)
