"""The lead page's sections beyond the facts and actions (router/admin/console/pages.py):

the score chart (chart.py), fit grade with its reasons and what is missing (scoring/icp.py on the
lead's fields, under the ICP file in force), identity (the identifiers and anonymous profiles
merged into the lead), its account and active members, routing (team, rule, rules version,
assignment) and SLA status (the next step due), the active model's probability with its exact
explanation (scoring/treeshap.py; none without an active model), and the audit entries about the lead.
"""

from __future__ import annotations

from router.admin.console.chart import render, score_curve
from router.admin.console.html import h, when
from router.admin.http import as_str, num
from router.admin.leads import LeadHandlers
from router.storage import audit, keys
from router.storage.config_store import ICP
from router.storage.live_config import RedisConfigSource
from scoring import IcpConfig
from scoring.icp import fit_grade

MEMBERS_SHOWN = 10


def _name(data: dict[str, str], fallback: str) -> str:
    first, last = data.get("f:first_name", ""), data.get("f:last_name", "")
    return " ".join(x for x in (first, last) if x) or data.get("email", "") or fallback


class LeadSections:
    """Reads and renders the lead page's extra sections over the admin app's handlers."""

    def __init__(self, admin: LeadHandlers) -> None:
        self.admin = admin
        self._icp: RedisConfigSource[IcpConfig] | None = None

    async def icp(self) -> IcpConfig | None:
        if self._icp is None:
            self._icp = RedisConfigSource(ICP, self.admin.settings.files.icp_file, self.admin.redis)
        await self._icp.poll()
        return self._icp.current

    async def chart(self, lead_id: str, data: dict[str, str]) -> str:
        a = self.admin
        scoring = await a.scoring_now()  # the published version in force, else the file
        curve = score_curve(await a.store.lead_reasons(lead_id), await a.store.lead_history(lead_id),
                            stored=num(data.get("score")), asof=num(data.get("asof")), now=a.clock(),
                            half_life_s=scoring.half_life_s, threshold=scoring.threshold)
        return ('<h2>Score over time</h2><div class="card" id="chart">'
                f'<p class="muted">Half-life {scoring.half_life_days:g} days; the dashed line is the sales-ready '
                f"threshold. Hover a point for the event.</p>{render(curve)}</div>")

    async def fit(self, data: dict[str, str]) -> str:
        config = await self.icp()
        fields = {k[2:]: v for k, v in data.items() if k.startswith("f:")}
        if config is None:
            return ""
        grade = fit_grade(fields, config)
        reasons = "".join(f"<li>{h(r)}</li>" for r in grade.reasons) or "<li>nothing known yet</li>"
        missing = ", ".join(grade.missing) or "nothing"
        return ('<h2>Fit</h2><div class="card" id="fit">'
                f'<p>Grade <b id="fit-grade">{h(grade.letter)}</b> ({grade.points:.0f} of 100 on what is known, '
                f"{grade.known_share:.0%} of the profile known)</p><ul>{reasons}</ul>"
                f'<p>Missing: <span id="fit-missing">{h(missing)}</span></p></div>')

    async def model(self, data: dict[str, str]) -> str:
        """The active model's probability for the lead as it is now, with its top signed contributions."""
        m = await self.admin._model_now(data)
        if not m:
            return ('<h2>Model</h2><p class="muted" id="model">No model is active (<code>leadrouter model '
                    "activate</code>); the score above is the rules' score.</p>")
        rows = "".join(
            f'<tr><td class="num">{float(c.get("log_odds", 0.0)):+.2f}</td><td>{h(c.get("label") or c.get("feature"))}'
            f'</td><td>{h(c.get("value", ""))}</td></tr>' for c in m.get("contributions") or [])
        more = int(m.get("more") or 0)
        return ('<h2>Model</h2><div class="card" id="model">'
                f'<p>Probability <b>{float(m.get("probability", 0.0)):.2f}</b> · model {h(m.get("version", ""))}'
                '<span class="muted"> · contributions in log-odds, exact for this model (they add up to its '
                'output)</span></p>'
                f'<table><thead><tr><th>Effect</th><th>Feature</th><th>Value</th></tr></thead><tbody>{rows}'
                f'</tbody></table>{f"<p class=muted>…and {more} smaller</p>" if more else ""}</div>')

    async def identity(self, lead_id: str, data: dict[str, str]) -> str:
        members = sorted(as_str(m) for m in await self.admin.redis.smembers(keys.lead_ids(lead_id)))
        rows = []
        for m in members:
            kind, _, value = m.partition(":")
            profile = keys.lead_id_for_visitor(value) if kind == "v" else keys.lead_id_for_user(value)
            what = "visitor id" if kind == "v" else "user id"
            rows.append(f"<tr><td>{h(what)}</td><td><code>{h(value)}</code></td><td class=\"opt\"><code>"
                        f"{h(profile)}</code></td></tr>")
        user = f' · user id <code>{h(data["user_id"])}</code>' if data.get("user_id") else ""
        table = (('<table><thead><tr><th>Kind</th><th>Identifier</th><th class="opt">Merged profile</th></tr>'
                  f'</thead><tbody>{"".join(rows)}</tbody></table>') if rows
                 else '<p class="muted">No other identifiers merged into this lead.</p>')
        return (f'<h2>Identity</h2><div class="card" id="identity"><p>Lead <code>{h(lead_id)}</code>{user}</p>'
                f"{table}</div>")

    async def account(self, lead_id: str) -> str:
        store = self.admin.store
        key_id = (await store.lead_accounts([lead_id])).get(lead_id)
        if not key_id:
            return ""
        acct = await store.account_hash(key_id)
        members = await store.account_members(key_id, MEMBERS_SHOWN + 1)
        hashes = await store.lead_hashes([m for m, _ in members])
        rows = []
        for mid, engaged in members:
            m = hashes.get(mid, {})
            if not m or m.get("forgotten") == "1":
                continue
            who = h(_name(m, mid))
            link = who if mid == lead_id else f'<a href="/console/leads/{h(mid)}">{who}</a>'
            rows.append(f'<tr><td>{link}</td><td class="opt">{h(m.get("f:job_title", ""))}</td>'
                        f'<td>{engaged:.1f}</td><td class="opt">{h(when(num(m.get("last_seen"))))}</td></tr>')
        return ('<h2>Account</h2><div class="card" id="account">'
                f'<p><b>{h(acct.get("name") or acct.get("domain") or key_id)}</b> {h(acct.get("domain", ""))} · '
                f'intent {num(acct.get("intent")):.1f} · {int(num(acct.get("active_people")))} active people</p>'
                '<table><thead><tr><th>Member</th><th class="opt">Title</th><th>Engagement</th>'
                f'<th class="opt">Last active</th></tr></thead><tbody>{"".join(rows[:MEMBERS_SHOWN])}</tbody>'
                "</table></div>")

    async def routing(self, lead_id: str, data: dict[str, str]) -> str:
        aid = data.get("assignment_id", "")
        if not aid:
            return ('<h2>Routing and SLA</h2><div class="card" id="routing"><p class="muted">Not assigned to a rep '
                    "now.</p></div>")
        team = data.get("team", "")
        pipe = self.admin.redis.pipeline(transaction=False)
        for step in keys.SLA_STEPS:
            pipe.zscore(keys.team_sla(team, step), keys.sla_member(lead_id, aid))
        due = dict(zip(keys.SLA_STEPS, await pipe.execute(), strict=True))
        now = self.admin.clock()
        if data.get("accepted_by"):
            sla = f'accepted by {h(data["accepted_by"])}'
        else:
            pending = sorted((float(t), s) for s, t in due.items() if t is not None)
            if pending:
                t, step = pending[0]
                late = " (overdue)" if t <= now else ""
                sla = f"waiting for accept: {h(step)} due {h(when(t))}{late}"
            else:
                sla = "waiting for accept: no SLA step pending"
        path = " → ".join(h(x) for x in (f"team {team}" if team else "", f"rule {data.get('rule', '')}",
                                             f"rep {data.get('owner_name') or data.get('owner', '')}") if x)
        return ('<h2>Routing and SLA</h2><div class="card" id="routing">'
                f'<p>{path} · rules {h(data.get("rules_version", "-"))} · assignment <code>{h(aid)}</code> '
                f'at {h(when(num(data.get("assigned_ts"))))}</p><p id="sla">SLA: {sla}</p></div>')

    async def audit(self, lead_id: str) -> str:
        entries = await audit.for_lead(self.admin.redis, lead_id, 50)
        if not entries:
            return '<h2>Audit</h2><p class="muted" id="lead-audit">No changes recorded through the console or API.</p>'
        rows = "".join(f"<tr><td>{h(when(e.ts))}</td><td>{h(e.who)}</td><td>{h(e.action)}</td>"
                       f'<td class="opt">{h(e.via)}</td><td class="opt">{h(e.detail)}</td></tr>' for e in entries)
        return ('<h2>Audit</h2><table id="lead-audit"><thead><tr><th>When</th><th>Who</th><th>What</th>'
                f'<th class="opt">Via</th><th class="opt">Detail</th></tr></thead><tbody>{rows}</tbody></table>')

    async def all(self, lead_id: str, data: dict[str, str]) -> list[str]:
        return [await self.chart(lead_id, data), await self.fit(data), await self.model(data),
                await self.routing(lead_id, data),
                await self.identity(lead_id, data), await self.account(lead_id), await self.audit(lead_id)]

