"""The ops pages' routes and styles: Rules and scoring, Team, Health (ops edit; readonly see; reps are refused).

Registered on the admin app after the console's own routes (router/admin/app.py),
through the console's session, CSRF and role guard (:meth:`Console.page`).
"""

from __future__ import annotations

from aiohttp import web

from router.admin.auth import Role
from router.admin.console.health import HealthPage
from router.admin.console.pages import Console, see_other
from router.admin.console.rules_pages import RulesPages
from router.admin.console.session import Session
from router.admin.console.team import TeamPage
from router.admin.roster import RosterHandlers

VIEW = frozenset({Role.OPS, Role.READONLY})
EDIT = frozenset({Role.OPS})


async def rules_home(request: web.Request, session: Session) -> web.StreamResponse:
    return see_other("/console/rules/routing")


def add_ops_routes(app: web.Application, console: Console, admin: RosterHandlers) -> None:
    """Serve /console/rules/..., /console/team and /console/health; sample health while the app runs."""
    rules = RulesPages(admin)
    team = TeamPage(admin)
    health = HealthPage(admin.settings, admin.redis, admin.clock)
    r = app.router
    r.add_get("/console/rules", console.page(rules_home, roles=VIEW))
    r.add_get("/console/rules/{kind}", console.page(rules.edit_page, roles=VIEW))
    r.add_post("/console/rules/{kind}", console.page(rules.edit_action, roles=EDIT))
    r.add_get("/console/rules/{kind}/history", console.page(rules.history_page, roles=VIEW))
    r.add_post("/console/rules/{kind}/rollback", console.page(rules.rollback, roles=EDIT))
    r.add_get("/console/team", console.page(team.page, roles=VIEW))
    r.add_post("/console/team/{rep_id}/availability", console.page(team.set_availability, roles=EDIT))
    r.add_post("/console/team/{rep_id}/profile", console.page(team.set_profile, roles=EDIT))
    r.add_get("/console/health", console.page(health.page, roles=VIEW))
    app.cleanup_ctx.append(health.sampler)
