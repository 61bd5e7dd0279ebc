"""Rules endpoints: validate, test, simulate, publish, roll back, history and the active text (``/v1/rules``).

Also the guards every rules text passes before it is compiled (:func:`yaml_guard`,
:func:`printable_problem`) and the redaction of webhook URLs for non-ops readers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from router.admin.auth import Role
from router.admin.core import AdminCore
from router.admin.http import ApiError, json_response, kind, suggest
from router.admin.openapi import MAX_NOTE, Operation
from router.backtest.simulate import in_time_order, parse_ts
from router.storage.rules_store import (
    PublishedRules,
    RulesRejectedError,
    RulesVersionError,
    cases_path_for,
    check_rules,
    parse_version,
    read_text,
    run_checks,
)
from rules import FIELDS, RoutingConfig, RulesError, load_routing
from rules.simulation import SimLead, SimulationReport, lead_facts, simulate

log = logging.getLogger(__name__)

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000
MAX_TS = 253_402_300_799.0  # 9999-12-31T23:59:59Z
_WEBHOOK = re.compile(r"""(slack_webhook\s*:\s*)(["']?)https://[^\s"',}\]]+\2""")
SIM_LEAD_KEYS = ("lead_id", "ts", *FIELDS, "website")


def yaml_guard(text: str, what: str) -> None:
    """Refuse YAML whose nesting or alias expansion would make compiling it blow up (422).

    Syntax errors are left to the compiler, which reports them with their line.
    """
    opens = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
             yaml.FlowSequenceStartToken)
    closes = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)
    depth = aliases = 0
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, opens):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    msg = (f"{what} nests more than {MAX_YAML_DEPTH} levels deep; a routing file needs a handful, "
                           "so flatten it")
                    raise ApiError(422, "yaml_too_deep", msg)
            elif isinstance(token, closes):
                depth -= 1
            elif isinstance(token, yaml.AliasToken):
                aliases += 1
    except yaml.YAMLError:
        return
    if not aliases:
        return
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # an alias cycle counts once; the compiler reports it
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        sizes[id(node)] = min(total, MAX_YAML_NODES + 1)
        return sizes[id(node)]

    if root is not None and size(root) > MAX_YAML_NODES:
        msg = (f"{what} expands to more than {MAX_YAML_NODES:,} values through YAML aliases (*name); "
               "write the values out instead of nesting aliases")
        raise ApiError(422, "yaml_too_large", msg)


def printable_problem(text: str, source: str) -> str | None:
    """The YAML reader's refusal of a control character, as a rules problem line; None when the text is printable.

    (PyYAML raises it while the loader is being built, before rules/_yaml.py's own error handling.)
    """
    try:
        yaml.reader.Reader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        return (f"{source}:{line}: YAML syntax error: character #x{exc.character:04x} is not allowed ({exc.reason}); "
                "remove it: only printable text is allowed")
    return None


def redact_webhooks(text: str) -> str:
    """Blank Slack webhook URLs (credentials) in rules text."""
    return _WEBHOOK.sub(lambda m: f'{m.group(1)}"<redacted>"', text)


def _version_meta(doc: PublishedRules) -> dict[str, Any]:
    return {"number": doc.number, "tag": doc.tag, "author": doc.author, "ts": doc.ts, "note": doc.note,
            "source": doc.source, "sha256": doc.sha256, "content_hash": doc.content_hash,
            "file_version": doc.file_version, "cases_count": doc.cases_count}



def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _report_out(report: SimulationReport, current_label: str) -> dict[str, Any]:
    def side(result: Any, label: str) -> dict[str, Any]:
        return {"version": result.version, "source": label, "teams": dict(result.team_counts),
                "reps": dict(result.rep_counts), "rules": dict(result.rule_counts)}

    span = report.span
    return {
        "leads": report.leads, "moves": report.moves, "rule_changes": report.rule_changes,
        "current": side(report.current, current_label), "new": side(report.new, "request body 'rules'"),
        "span": {"first": span.first, "last": span.last, "working_days": span.working_days} if span else None,
        "teams": [{"team": r.team, "current": r.current, "new": r.new, "delta": r.delta,
                   "reps_current": r.reps_current, "reps_new": r.reps_new,
                   "current_per_rep_day": r.current_per_rep_day, "new_per_rep_day": r.new_per_rep_day}
                  for r in report.team_rows()],
        "reps": [{"rep_id": r.rep_id, "name": r.name, "team_current": r.team_current, "team_new": r.team_new,
                  "current": r.current, "new": r.new, "delta": r.delta, "current_per_day": r.current_per_day,
                  "new_per_day": r.new_per_day} for r in report.rep_rows()],
        "moved": [{"lead_id": m.lead.lead_id, "label": m.lead.label,
                   "before": {"team": m.before.team, "rule": m.before.rule, "rep_id": m.before.rep_id},
                   "after": {"team": m.after.team, "rule": m.after.rule, "rep_id": m.after.rep_id}}
                  for m in report.examples],
    }


class RulesHandlers(AdminCore):
    """Handlers of /v1/rules/...; a mixin of :class:`router.admin.app.Admin`."""

    async def _read_yaml_body(self, request: web.Request, op: Operation) -> str:
        """validate: raw YAML (text/plain, application/yaml, ...) or JSON {"rules": "..."}."""
        if request.content_type in YAML_TYPES and "Content-Type" in request.headers:
            raw = await request.read()
            if len(raw) > self.settings.admin.max_rules_bytes:
                raise ApiError(413, "rules_too_large", f"the rules are {len(raw)} bytes; the most is "
                                                       f"{self.settings.admin.max_rules_bytes} "
                                                       "(LEADROUTER_ADMIN_MAX_RULES_BYTES)")
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(400, "not_utf8", f"the rules are not UTF-8 text (byte {exc.start}); save them as "
                                                "UTF-8") from None
        body = await self.body(request, op, ("rules",))
        text = self.rules_text(body, "rules", required=True)
        assert text is not None
        return text

    async def validate_rules(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        text = await self._read_yaml_body(request, self._ops["validate_rules"])

        def work() -> dict[str, Any]:
            yaml_guard(text, "the rules")
            problem = printable_problem(text, "rules")
            try:
                if problem is not None:
                    raise RulesError(problem)
                config = load_routing(text, "rules")
            except RulesError as exc:
                return {"ok": False, "problems": list(exc.problems), "version": None, "content_hash": None,
                        "teams": 0, "reps": 0, "rules": 0}
            return {"ok": True, "problems": [], "version": config.version, "content_hash": config.content_hash,
                    "teams": len(config.teams), "reps": len(config.reps), "rules": len(config.rules)}

        return json_response(await asyncio.to_thread(work))

    async def test_rules(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        body = await self.body(request, self._ops["test_rules"], ("rules", "cases"))
        text = self.rules_text(body, "rules", required=True)
        cases = self.rules_text(body, "cases", required=True)
        assert text is not None and cases is not None

        def work() -> dict[str, Any]:
            yaml_guard(text, "the rules")
            yaml_guard(cases, "the test cases")
            unreadable = [p for p in (printable_problem(text, "rules"), printable_problem(cases, "cases")) if p]
            if unreadable:
                return {"ok": False, "problems": unreadable, "version": None, "passed": 0, "failed": 0, "results": []}
            try:
                check = run_checks(text, "rules", cases, "cases")
            except RulesRejectedError as exc:
                return {"ok": False, "problems": list(exc.failures) or [str(exc)], "version": None, "passed": 0,
                        "failed": 0, "results": []}
            results = [{"name": r.case.name, "passed": r.passed, "expected_team": r.expected_team,
                        "expected_rule": r.expected_rule, "actual_team": r.actual_team,
                        "actual_rule": r.actual_rule, "path": list(r.path), "message": r.message,
                        "placement": r.placement or None}
                       for r in check.results]
            failed = len(check.failures)
            problems = [] if check.results else ["cases: no test cases; add at least one"]
            return {"ok": check.passed, "problems": problems, "version": check.config.version,
                    "passed": len(check.results) - failed, "failed": failed, "results": results}

        return json_response(await asyncio.to_thread(work))

    def sim_leads(self, raw: object) -> list[SimLead]:
        if not isinstance(raw, list) or not raw:
            raise ApiError(400, "bad_type", f"'leads' must be a non-empty list of lead objects, got {kind(raw)}")
        cap = self.settings.admin.simulate_max_leads
        if len(raw) > cap:
            raise ApiError(413, "too_many_leads", f"'leads' has {len(raw)} leads; one call routes at most {cap} "
                                                  "(LEADROUTER_ADMIN_SIMULATE_MAX_LEADS): split them, or use "
                                                  "`leadrouter rules simulate --leads FILE`")
        leads: list[SimLead] = []
        for i, row in enumerate(raw):
            where = f"leads[{i}]"
            if not isinstance(row, dict):
                raise ApiError(400, "bad_type", f"{where} must be an object of lead fields, got {kind(row)}")
            for key, value in row.items():
                if key not in SIM_LEAD_KEYS:
                    raise ApiError(400, "unknown_key", f"{where}: unknown field {key[:100]!r}; "
                                                       f"{suggest(key, SIM_LEAD_KEYS)}")
                if isinstance(value, (list, dict)):
                    raise ApiError(400, "bad_type", f"{where}.{key} must be a string, number or boolean, got "
                                                    f"{kind(value)}")
            lead_id = row.get("lead_id")
            if lead_id is not None and not isinstance(lead_id, str):
                raise ApiError(400, "bad_type", f"{where}.lead_id must be a string, got {kind(lead_id)}")
            ts: float | None = None
            if row.get("ts") not in (None, ""):
                try:
                    ts = parse_ts(row["ts"])
                except (ValueError, OverflowError, TypeError):
                    ts = None
                    bad = True
                else:
                    bad = ts is not None and not 0 < ts <= MAX_TS
                if bad:
                    raise ApiError(400, "bad_value", f"{where}.ts {str(row['ts'])[:60]!r} is not a time; use epoch "
                                                     "seconds or ISO 8601 such as 2026-11-24T09:30:00Z (up to the "
                                                     "year 9999)")
            facts_raw = {k: v for k, v in row.items() if k in FIELDS or k == "website"}
            if isinstance(facts_raw.get("website"), (bool, int, float)):
                facts_raw["website"] = str(facts_raw["website"])
            leads.append(SimLead(lead_id=lead_id or f"lead-{i + 1}", facts=lead_facts(facts_raw), ts=ts))
        return in_time_order(leads)

    async def simulate_rules(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        body = await self.body(request, self._ops["simulate_rules"], ("rules", "current", "leads", "examples"))
        text = self.rules_text(body, "rules", required=True)
        current_text = self.rules_text(body, "current", required=False)
        assert text is not None
        if "leads" not in body.data:
            raise ApiError(400, "missing_key", "the body needs 'leads': a list of lead objects with catalogue fields")
        leads = self.sim_leads(body.data["leads"])
        examples = body.integer("examples", lo=0, hi=100, default=10)
        in_force = await self.config()
        current_label = self.config_source()

        def compile_or_422(yaml_text: str, what: str) -> RoutingConfig:
            yaml_guard(yaml_text, what)
            problem = printable_problem(yaml_text, what)
            try:
                if problem is not None:
                    raise RulesError(problem)
                return load_routing(yaml_text, what)
            except RulesError as exc:
                raise ApiError(422, "rules_invalid", f"{what} do not compile; fix them (POST /v1/rules/validate "
                                                     "lists every problem)", problems=exc.problems) from None

        def work() -> SimulationReport:
            new = compile_or_422(text, "the new rules")
            current = compile_or_422(current_text, "the current rules") if current_text is not None else in_force
            return simulate(leads, current, new, examples=examples)

        report = await asyncio.to_thread(work)
        if current_text is not None:
            current_label = "request body 'current'"
        return json_response(_report_out(report, current_label))

    async def publish_rules(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        principal = self.principal(request)
        body = await self.body(request, self._ops["publish_rules"], ("rules", "cases", "note"))
        text = self.rules_text(body, "rules", required=False)
        cases = self.rules_text(body, "cases", required=False)
        note = body.text("note", max_len=MAX_NOTE) or ""
        if text is None and cases is not None:
            raise ApiError(400, "missing_key", "'cases' came without 'rules'; send both, or neither to publish the "
                                               "configured rules file and its cases")
        if text is not None and cases is None:
            raise ApiError(400, "missing_key", "'rules' came without 'cases'; publish runs the test cases, so send "
                                               "the cases (routing_test.yaml) too")
        if text is None or cases is None:
            path: Path = self.settings.files.rules_file
            cases_path = cases_path_for(path)
            text = read_text(path, "rules file", "check LEADROUTER_RULES_FILE")
            cases = read_text(cases_path, "test cases", f"keep the test cases in {cases_path.name} beside "
                                                        f"{path.name}")
            source, cases_source = str(path), str(cases_path)
        else:
            source, cases_source = f"admin API upload by {principal.name}", "admin API upload (cases)"
        rules_yaml, cases_yaml = text, cases

        def work() -> Any:
            yaml_guard(rules_yaml, "the rules")
            yaml_guard(cases_yaml, "the test cases")
            unreadable = [p for p in (printable_problem(rules_yaml, source),
                                      printable_problem(cases_yaml, cases_source)) if p]
            if unreadable:
                raise ApiError(422, "rules_rejected", "not published: the text is not valid YAML", problems=unreadable)
            try:
                return check_rules(rules_yaml, source, cases_yaml, cases_source)
            except RulesRejectedError as exc:
                raise ApiError(422, "rules_rejected", f"not published: {str(exc).splitlines()[0]}",
                               problems=exc.failures or (str(exc),)) from None

        check = await asyncio.to_thread(work)
        before = await self.rules.active_number()
        doc = await self.rules.publish(check, author=principal.name, note=note, now=self.clock(), via="api")
        await self.routing.poll()
        log.info("rules v%d published through the admin API by %s", doc.number, principal.name)
        return json_response({**_version_meta(doc), "active": True, "previous": before}, status=201)

    async def rollback_rules(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        principal = self.principal(request)
        raw = request.match_info["version"]
        try:
            number = parse_version(raw[:40])
        except RulesVersionError as exc:
            raise ApiError(400, "bad_version", str(exc)) from None
        if number > 2**31:
            raise ApiError(404, "unknown_version", f"no published rules version v{number}")
        body = await self.body(request, self._ops["rollback_rules"], ("note",))
        note = body.text("note", max_len=MAX_NOTE) or ""
        if await self.rules.get(number) is None:
            known = await self.rules.numbers()
            have = f"published versions are v{known[0]}..v{known[-1]}" if known else "nothing is published yet"
            raise ApiError(404, "unknown_version", f"no published rules version v{number}; {have} "
                                                   "(GET /v1/rules/history)")
        if await self.rules.active_number() == number:
            raise ApiError(409, "already_active", f"v{number} is already the active rules version; nothing changed")
        try:
            entry = await self.rules.rollback(number, author=principal.name, note=note, now=self.clock(),
                                              via="api")
        except RulesVersionError as exc:
            raise ApiError(409, "rollback_refused", str(exc)) from None
        doc = await self.rules.get(number)
        await self.routing.poll()
        return json_response({"action": entry.action, "number": entry.number, "previous": entry.previous,
                              "author": entry.author, "ts": entry.ts, "note": entry.note,
                              "tag": doc.tag if doc is not None else f"v{number}"})

    async def rules_history(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        versions = await self.rules.versions()
        history = await self.rules.history()
        return json_response({
            "active": await self.rules.active_number(),
            "versions": [_version_meta(d) for d in versions],
            "history": [{"action": h.action, "number": h.number, "previous": h.previous, "author": h.author,
                         "ts": h.ts, "note": h.note} for h in history],
        })

    async def rules_active(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        redact = self.principal(request).role is not Role.OPS
        doc = await self.rules.active()
        in_force = (await self.config()).version
        if doc is not None:
            out: dict[str, Any] = {
                "source": "published", "number": doc.number, "version": doc.tag, "author": doc.author, "ts": doc.ts,
                "note": doc.note, "sha256": doc.sha256, "content_hash": doc.content_hash, "content": doc.content,
            }
        else:
            path = self.settings.files.rules_file
            text = read_text(path, "rules file", "check LEADROUTER_RULES_FILE")
            file_config = self.routing.file_config
            out = {"source": "file", "number": None, "version": file_config.version, "author": None, "ts": None,
                   "note": str(path), "sha256": _sha256(text), "content_hash": file_config.content_hash,
                   "content": text}
        if redact:
            out["content"] = redact_webhooks(out["content"])
        out["redacted"] = redact
        out["in_force"] = in_force
        return json_response(out)
