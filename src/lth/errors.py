"""The single exception type for user mistakes (and the one-line warning)."""

import sys


class LthError(Exception):
    """A user mistake (bad name, bad value, missing file...).

    The message is one clear sentence naming the bad value and what is allowed;
    the CLI prints it on one line and exits with code 2.
    """


class TrainingDiverged(LthError):
    """Training produced a non-finite loss (NaN or infinity): it was stopped at ``iteration``.

    Raised by the trainers at the evaluation where the loss was read (no extra device sync);
    callers that know the round re-raise it with the round and where the results are kept.
    """

    def __init__(
        self,
        iteration: int,
        loss: float,
        start: int = 0,
        network: str = "",
        message: str | None = None,
        index: int | None = None,
    ) -> None:
        self.iteration, self.loss, self.start, self.network = iteration, loss, start, network
        self.index = index  # in a vectorised training: the position of the network that diverged
        of = f" of {network}" if network else ""
        super().__init__(message or f"training{of} diverged at iteration {iteration} (loss {loss}); {self.hint('lr')}")

    def hint(self, lr: str = "--lr") -> str:
        """What to change: the start weights when the loss was already non-finite before any step."""
        if self.iteration <= self.start:
            return "the network's starting weights already give a non-finite loss"
        return f"lower {lr}"


def warn(message: str) -> None:
    """Print one line ``lth: warning: MESSAGE`` on stderr (the code base's warning format)."""
    print(f"lth: warning: {message}", file=sys.stderr)
