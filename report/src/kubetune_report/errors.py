"""The reporting helper's one exception."""


class ReportError(Exception):
    """A report that could not be delivered (logged as a warning, never raised to a trainer)."""
