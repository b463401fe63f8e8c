"""The error every user-facing failure derives from: the CLI prints its message as one line and exits 1."""


class EgruError(Exception):
    """A problem with the user's input or environment (not a compiler bug)."""
