"""The two kinds of expected failure, each mapped to an exit status by the CLIs.

Their messages are one line that names the file, key or flag at fault and what to do;
the CLIs print them without a traceback.
"""


class BadInput(Exception):
    """The user's input cannot be used (exit status 2). Nothing has been written."""

    exit_code = 2


class ParityError(Exception):
    """The converted model does not compute what the original computed (exit status 1)."""

    exit_code = 1
