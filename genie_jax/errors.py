"""User-facing errors: the CLI prints these as one line, without a traceback."""


class UserError(Exception):
    """A problem with the user's input (config key, data, workdir) that they can fix."""
