"""Exceptions shared by every floor of the library."""

__all__ = ["NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or inf loss; the last good checkpoint (if any) is intact."""
