"""The one exception type for bad user input: the CLI prints it as a one-line message and exits 2."""


class SnsError(Exception):
    """A problem with the user's input (file, flag, config value) that they can fix.

    The message must be one line naming the file/flag, what was expected and how to fix it.
    The CLI prints ``error: <message>`` and exits with status 2, never a traceback.
    """
