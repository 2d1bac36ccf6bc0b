"""Errors that end a command with one line on stderr instead of a traceback."""


class CommandError(Exception):
    """A command could not do its work (not the user's input): one line, exit status 1."""
