"""Errors raised while building data shapes."""


class ModelError(Exception):
    """Root of every error raised by ``models``."""


class InvalidEventError(ModelError, ValueError):
    """An event failed validation; the message names the field, value and fix."""
