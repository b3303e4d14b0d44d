"""The single exception type for user mistakes."""


class LthError(Exception):
    """A user mistake (bad name, bad value, missing file...).

    The message is one clear sentence naming the bad value and what is allowed;
    the CLI prints it on one line and exits with code 2.
    """
