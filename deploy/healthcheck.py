#!/usr/bin/env python3
"""Container health check for the leadrouter image.

    leadrouter-healthcheck [collector|worker|admin|any]      (default: any)

Asks ``GET /healthz`` of the collector (``LEADROUTER_COLLECTOR_PORT``, default
8080), the worker's web server (``LEADROUTER_WORKER_WEB_PORT``, default
6066) and/or the admin service (``LEADROUTER_ADMIN_PORT``, default 8081) on
this container's loopback, and exits 0 when one asked answers 200
with ``{"ok": true}``; 1 otherwise.  The ports are read with the service's own
settings loader (:func:`router.settings.load_settings`), so the check and the
service can never disagree about them.

Installed in the image as /usr/local/bin/leadrouter-healthcheck and used by the
Dockerfile's HEALTHCHECK and deploy/compose.yaml.  Standard library only apart
from ``router.settings``.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

ROLES = ("collector", "worker", "admin", "any")
# Used when the settings cannot be loaded (a bad setting also stops the service,
# which then fails the check by not answering).
DEFAULT_PORTS = {"collector": 8080, "worker": 6066, "admin": 8081}
_WILDCARD = {"", "0.0.0.0", "::", "[::]"}


def targets(role: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The /healthz URLs to ask for ``role``."""
    collector_host, admin_host, ports = "127.0.0.1", "127.0.0.1", dict(DEFAULT_PORTS)
    try:
        from router.settings import load_settings

        s = load_settings(environ)
        ports = {"collector": s.ingest.collector_port, "worker": s.worker.web_port, "admin": s.admin.port}
        if s.collector_host not in _WILDCARD:
            collector_host = s.collector_host
        if s.admin.host not in _WILDCARD:
            admin_host = s.admin.host
    except Exception as exc:  # the check must answer, not crash
        print(f"leadrouter-healthcheck: settings not loaded ({exc}); using default ports", file=sys.stderr)
    # faust binds the worker web to 0.0.0.0
    hosts = {"collector": collector_host, "worker": "127.0.0.1", "admin": admin_host}
    roles = ("collector", "worker", "admin") if role == "any" else (role,)
    return [f"http://{hosts[r]}:{ports[r]}/healthz" for r in roles]


def healthy(url: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # loopback http only
            if resp.status != 200:
                return False
            body = json.loads(resp.read() or b"{}")
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return isinstance(body, dict) and body.get("ok") is True


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         timeout_s: float = 3.0) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    role = args[0] if args else "any"
    if role not in ROLES or len(args) > 1:
        print(f"usage: leadrouter-healthcheck [{'|'.join(ROLES)}]", file=sys.stderr)
        return 2
    urls = targets(role, environ)
    for url in urls:
        if healthy(url, timeout_s):
            return 0
    print(f"leadrouter-healthcheck: no healthy answer from {', '.join(urls)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
