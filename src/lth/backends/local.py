"""``local``: trials in this process, one after another, or vectorised side by side (lockstep)."""

from __future__ import annotations

from lth.backends.base import Events, TrialSpec, run_trial


class LocalBackend:
    """Today's behaviour: ``group`` > 1 trains that many trials side by side in one vectorised step."""

    name = "local"

    def __init__(self, group: int = 1) -> None:
        self.group = group
        self.slots = group

    def run(self, trials: list[TrialSpec], events: Events, progress: bool) -> None:
        if self.group <= 1:
            for spec in trials:
                events.started(spec)
                events.done(spec, run_trial(spec, progress=progress))
            return
        from lth.training.lockstep import Lockstep

        for start in range(0, len(trials), self.group):  # `group` searches at a time, their trainings vectorised
            chunk = trials[start : start + self.group]
            lockstep = Lockstep(self.group, progress=progress)
            factory = lockstep.trainer_factory()

            def program(spec: TrialSpec, factory=factory):
                def run_one() -> None:
                    events.done(spec, run_trial(spec, trainer_factory=factory))

                return run_one

            for spec in chunk:
                events.started(spec)
            lockstep.run([program(spec) for spec in chunk])
