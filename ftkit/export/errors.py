"""The export stage's error."""

from ftkit.errors import FtkitError


class ExportError(FtkitError, RuntimeError):
    """A job that cannot be exported as asked (not finished, quantised base for a merge, merge check failed)."""
