"""Recording who changed what from the admin app: :func:`audit`, over router/storage/audit.py.

Every handler or console page that changes something calls it once the change is made::

    from router.admin.audit import audit

    await audit(admin, "rep.availability", via="console", target=rep_id, detail="out of office until 2026-12-31")

The author is the signed-in caller of the request being handled (the console session's or the
bearer token's principal) unless ``principal`` is given; ``who`` overrides the name (the
one-time alert links act as the rep the link was made for).  See :mod:`router.storage.audit`
for the fields, the actions in use and what never to put in them (a lead's name or email).
"""

from __future__ import annotations

from router.admin.auth import Principal
from router.admin.core import PRINCIPAL, AdminCore
from router.storage import audit as store
from router.storage.audit import AuditEntry, Via


async def audit(admin: AdminCore, action: str, *, via: Via, lead_id: str = "", target: str = "",
                detail: str = "", principal: Principal | None = None, who: str = "", role: str = "") -> AuditEntry:
    """Record one change made through the admin app (see the module docstring)."""
    p = principal or PRINCIPAL.get(None)
    name = who or (p.name if p is not None and p.name else (p.role.value if p is not None else ""))
    return await store.record(admin.redis, who=name or "unknown", role=role or (p.role.value if p else ""),
                              action=action, via=via, lead_id=lead_id, target=target, detail=detail,
                              now=admin.clock())


__all__ = ["audit"]
