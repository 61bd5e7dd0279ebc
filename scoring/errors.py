"""Errors raised by ``scoring``.

Every message names where the problem is (file, line, rule, key), the bad value
and how to fix it, so ops can correct ``scoring.yaml`` without reading code.
"""


class ScoringError(Exception):
    """Root of every error raised by ``scoring``."""


class ScoringConfigError(ScoringError, ValueError):
    """A scoring config failed to parse or validate; the message says where and how to fix it."""


class DecayError(ScoringError, ValueError):
    """Decay math was called with an impossible argument (e.g. a half-life that is not > 0)."""


class IcpConfigError(ScoringConfigError):
    """The ideal-customer-profile config (``icp.yaml``) failed to parse or validate."""
