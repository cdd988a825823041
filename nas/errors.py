"""The one exception type users see: its message names the bad value and the fix."""


class NasError(Exception):
    """A problem with the user's input or environment; the CLI prints it on one line, no traceback."""
