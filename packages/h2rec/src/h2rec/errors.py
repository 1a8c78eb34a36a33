"""The one exception type for user mistakes; the CLI shows it as a message with exit code 2."""


class H2RecError(ValueError):
    """Bad input or configuration. The message names the file (and line) and the problem."""
