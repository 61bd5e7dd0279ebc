"""Errors raised at the I/O edge."""


class RouterError(Exception):
    """Root of every error raised by ``router``."""


class SettingsError(RouterError):
    """An environment setting is missing or malformed."""


class ConfigFileError(RouterError):
    """An ops-edited config file could not be read or failed validation."""


class TokenError(RouterError):
    """An email tracking token is forged, malformed or expired."""


class SendError(RouterError):
    """An alert could not be delivered on one channel."""


class TransientSendError(SendError):
    """Worth retrying: timeouts, 5xx, 429 (``retry_after`` set when known)."""

    def __init__(self, msg: str, retry_after: float | None = None) -> None:
        super().__init__(msg)
        self.retry_after = retry_after


class PermanentSendError(SendError):
    """Retrying cannot help: bad channel, revoked token, rejected recipient."""


class CollectorError(RouterError):
    """Root of what the collector refuses or skips: a whole request, one message, an ignored event."""


class ServerStartError(RouterError):
    """An embedded broker or Redis server did not start."""
