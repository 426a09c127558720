"""The one exception type for bad user input (the CLI prints it in one line, exit 2) and one line of a caught error."""


class SnsError(Exception):
    """A problem with the user's input (file, flag, config value) that they can fix.

    The message must be one line naming the file/flag, what was expected and how to fix it.
    The CLI prints ``error: <message>`` and exits with status 2, never a traceback.
    """


def one_line(e: BaseException) -> str:
    """A caught exception as ``Type: message`` on one line (whitespace collapsed, at most 300 characters of
    message), for an SnsError that names what failed underneath."""
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
