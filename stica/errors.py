"""Errors a user can fix (bad input, bad params): reported as one line, exit code 2."""


class SticaError(Exception):
    """An expected failure caused by the user's input; the CLI prints it without a traceback."""

    exit_code = 2
