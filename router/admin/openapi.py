"""The admin API's operations, declared once: routes, roles and the OpenAPI 3.1 document.

:data:`OPERATIONS` is the single list the admin app (router/admin/app.py) registers
its routes from and checks roles against, and :func:`build_spec` turns the same
list into the document served at ``GET /openapi.json``, so the two cannot
drift apart (tests/unit/router/admin/test_openapi.py compares the app's
router with the document anyway).

Request and response schemas are JSON Schema 2020-12 (OpenAPI 3.1).  Request
bodies are closed (``additionalProperties: false``): the API answers an
unknown key with a 400 that names it and suggests the right one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from router.admin.auth import ALL_ROLES, Role
from router.settings import Settings
from rules import FIELDS, FieldType

JSON = "application/json"
Schema = dict[str, Any]

OPS: frozenset[Role] = frozenset({Role.OPS})
OPS_REP: frozenset[Role] = frozenset({Role.OPS, Role.REP})
READERS: frozenset[Role] = ALL_ROLES

LEAD_ID_PATTERN = r"^[LAU][0-9a-f]{24}$"
VERSION_PATTERN = r"^[vV]?[0-9]{1,9}$"
MAX_NOTE = 500
MAX_REP_ID = 200
MAX_EMAIL = 320
MAX_LIMIT = 500
LIFECYCLE_ACTIONS = ("accept", "reject", "convert", "won", "lost")


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """``schema`` or null (JSON Schema 2020-12 style)."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema.get("type")
    if isinstance(kind, str):
        out = dict(schema)
        out["type"] = [kind, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: Mapping[str, Schema], required: tuple[str, ...] = (), *, closed: bool = False,
        description: str = "") -> Schema:
    out: Schema = {"type": "object", "properties": dict(properties)}
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    if description:
        out["description"] = description
    return out


STR: Schema = {"type": "string"}
NUM: Schema = {"type": "number"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
STR_LIST: Schema = {"type": "array", "items": STR}
COUNTS: Schema = {"type": "object", "additionalProperties": INT}


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: Literal["path", "query"]
    schema: Schema
    description: str
    required: bool = False

    def to_openapi(self) -> Schema:
        return {"name": self.name, "in": self.where, "required": self.where == "path" or self.required,
                "description": self.description, "schema": self.schema}


@dataclass(frozen=True, slots=True)
class Operation:
    """One route of the admin API."""

    op_id: str
    method: str
    path: str
    summary: str
    tag: str
    roles: frozenset[Role] | None  # None: no token needed
    ok: Mapping[str, Any] = field(default_factory=dict)  # content of the success response
    ok_status: int = 200
    params: tuple[Param, ...] = ()
    body: Mapping[str, Schema] | None = None  # media type -> schema
    body_required: bool = False
    errors: tuple[int, ...] = ()
    description: str = ""
    html_errors: tuple[int, ...] = ()  # statuses that may also answer an HTML page (the alert link pages)

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)


# --- parameters ----------------------------------------------------------------------------------

P_ACTION_TOKEN = Param("token", "path", {"type": "string", "minLength": 10, "maxLength": 2048},
                       "the signed action token from an alert link")
P_LEAD = Param("lead_id", "path", {"type": "string", "pattern": LEAD_ID_PATTERN},
               "lead id: L, A or U and 24 hex digits (find it with GET /v1/leads?email=...)")
P_REP = Param("rep_id", "path", {"type": "string", "minLength": 1, "maxLength": MAX_REP_ID},
              "rep id as in routing.yaml, e.g. anna-snelling")
P_VERSION = Param("version", "path", {"type": "string", "pattern": VERSION_PATTERN},
                  "published version number, e.g. 3 or v3 (see GET /v1/rules/history)")


def p_limit(default: int, what: str) -> Param:
    return Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": default},
                 f"most {what} to return (1-{MAX_LIMIT}, default {default})")


# --- component schemas ---------------------------------------------------------------------------


def _lead_fields_schema() -> Schema:
    props: dict[str, Schema] = {
        "lead_id": {"type": "string", "maxLength": 200, "description": "your id for the lead (default: its position)"},
        "ts": {"type": ["number", "string"],
               "description": "when it arrived: epoch seconds or ISO 8601; orders leads and sets the per-day load"},
    }
    for name, spec in FIELDS.items():
        kind = {FieldType.STRING: "string", FieldType.NUMBER: "number", FieldType.BOOLEAN: "boolean"}[spec.type]
        props[name] = {"type": [kind, "null"], "description": spec.description}
        if kind == "string":
            props[name]["maxLength"] = 1000
    props["website"] = {"type": ["string", "null"], "maxLength": 1000, "description": "used for account matching"}
    return obj(props, closed=True, description="one lead: catalogue fields (rules/catalogue.py), lead_id and ts")


def components(settings: Settings) -> dict[str, Schema]:
    rules_text = {"type": "string", "maxLength": settings.admin.max_rules_bytes}
    rep_id_body: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_REP_ID,
                           "description": "ops only: act as this rep (default: the lead's owner)"}
    note: Schema = {"type": "string", "maxLength": MAX_NOTE}
    placement = obj({"team": STR, "rule": STR, "rep_id": STR}, ("team", "rule", "rep_id"))
    version_meta = obj({
        "number": INT, "tag": STR, "author": STR, "ts": NUM, "note": STR, "source": STR, "sha256": STR,
        "content_hash": STR, "file_version": STR, "cases_count": INT,
    }, ("number", "tag", "author", "ts", "note", "source", "sha256", "content_hash", "file_version", "cases_count"))
    return {
        "Error": obj({
            "error": {"type": "string", "description": "machine-readable code, e.g. unknown_lead"},
            "detail": {"type": "string", "description": "what is wrong, naming the field or value, and the fix"},
            "problems": {**STR_LIST, "description": "every problem, one per line (rules and test cases)"},
        }, ("error", "detail")),
        "Health": obj({"ok": BOOL, "redis": STR}, ("ok", "redis")),
        "Principal": obj({"token_sha256": STR, "role": {"type": "string", "enum": [r.value for r in Role]},
                          "name": STR, "rep_id": nullable(STR), "created": NUM},
                         ("token_sha256", "role", "name", "rep_id", "created")),
        "Team": obj({
            "name": STR, "description": STR, "managers": STR_LIST, "strategy": STR,
            "sla": nullable({"type": "object"}), "has_slack_webhook": BOOL, "reps": STR_LIST,
            "after_hours": {"type": "object", "description": "what the team does when nobody can take a lead now: "
                                                             "{policy, team, rep} (rules/availability.py)"},
            "hand_raiser": nullable({"type": "object"}),
        }, ("name", "description", "managers", "strategy", "sla", "has_slack_webhook", "reps")),
        "TeamList": obj({"rules_version": STR, "rules_source": STR, "teams": {"type": "array", "items": ref("Team")}},
                        ("rules_version", "rules_source", "teams")),
        "Override": obj({
            "out_of_office": BOOL, "until": nullable({"type": "string", "format": "date"}), "note": STR,
            "set_by": STR, "set_at": NUM, "active": BOOL,
            "honoured_by_routing": {"type": "boolean",
                                    "description": "false: router/worker/distribution.py does not read overrides yet; "
                                                   "the override is recorded and shown, routing follows routing.yaml"},
        }, ("out_of_office", "until", "note", "set_by", "set_at", "active", "honoured_by_routing")),
        "Rep": obj({
            "id": STR, "name": STR, "email": STR, "slack_user_id": nullable(STR), "team": STR, "weight": INT,
            "capacity_day": nullable(INT), "capacity_30d": nullable(INT), "tz": STR, "hours": nullable(STR),
            "days": STR_LIST,
            "out_of_office": {"type": "array", "items": obj({"from": STR, "to": STR}, ("from", "to"))},
            "available_now": BOOL, "unavailable_reason": nullable(STR), "next_available": nullable(STR),
            "open_leads": INT, "override": nullable(ref("Override")),
        }, ("id", "name", "email", "slack_user_id", "team", "weight", "capacity_day", "capacity_30d", "tz", "hours",
            "days", "out_of_office", "available_now", "unavailable_reason", "next_available", "open_leads",
            "override")),
        "RepList": obj({"rules_version": STR, "rules_source": STR, "reps": {"type": "array", "items": ref("Rep")}},
                       ("rules_version", "rules_source", "reps")),
        "AvailabilityPatch": obj({
            "out_of_office": {"type": "boolean", "description": "true: mark out of office; false: clear the override"},
            "until": nullable({"type": "string", "format": "date",
                               "description": "last day out (the rep's local date), inclusive; null: until cleared"}),
            "note": note,
        }, ("out_of_office",), closed=True),
        "RulesText": obj({"rules": rules_text}, ("rules",), closed=True),
        "RulesYaml": {**rules_text, "description": "the rules file's text (YAML)"},
        "ValidateResult": obj({
            "ok": BOOL, "problems": STR_LIST, "version": nullable(STR), "content_hash": nullable(STR),
            "teams": INT, "reps": INT, "rules": INT,
        }, ("ok", "problems", "version", "content_hash", "teams", "reps", "rules")),
        "TestRequest": obj({"rules": rules_text, "cases": rules_text}, ("rules", "cases"), closed=True),
        "CaseResult": obj({
            "name": STR, "passed": BOOL, "expected_team": nullable(STR), "expected_rule": nullable(STR),
            "actual_team": STR, "actual_rule": STR, "path": STR_LIST, "message": STR,
            "placement": {**nullable(STR), "description": "with the case's at: clock, where the lead lands "
                                                           "(outcome, team, pool, SLA start)"},
        }, ("name", "passed", "expected_team", "expected_rule", "actual_team", "actual_rule", "path", "message")),
        "TestResult": obj({
            "ok": BOOL, "problems": STR_LIST, "version": nullable(STR), "passed": INT, "failed": INT,
            "results": {"type": "array", "items": ref("CaseResult")},
        }, ("ok", "problems", "version", "passed", "failed", "results")),
        "SimLead": _lead_fields_schema(),
        "SimulateRequest": obj({
            "rules": {**rules_text, "description": "the new rules (YAML)"},
            "current": {**rules_text, "description": "current rules (YAML); default: the rules in force"},
            "leads": {"type": "array", "items": ref("SimLead"), "minItems": 1,
                      "maxItems": settings.admin.simulate_max_leads},
            "examples": {"type": "integer", "minimum": 0, "maximum": 100, "default": 10,
                         "description": "moved leads to list"},
        }, ("rules", "leads"), closed=True),
        "SimSide": obj({"version": STR, "source": STR, "teams": COUNTS, "reps": COUNTS, "rules": COUNTS},
                       ("version", "source", "teams", "reps", "rules")),
        "SimulateResult": obj({
            "leads": INT, "moves": INT, "rule_changes": INT, "current": ref("SimSide"), "new": ref("SimSide"),
            "span": nullable(obj({"first": NUM, "last": NUM, "working_days": INT}, ("first", "last", "working_days"))),
            "teams": {"type": "array", "items": obj({
                "team": STR, "current": INT, "new": INT, "delta": INT, "reps_current": INT, "reps_new": INT,
                "current_per_rep_day": nullable(NUM), "new_per_rep_day": nullable(NUM),
            }, ("team", "current", "new", "delta", "reps_current", "reps_new", "current_per_rep_day",
                "new_per_rep_day"))},
            "reps": {"type": "array", "items": obj({
                "rep_id": STR, "name": STR, "team_current": nullable(STR), "team_new": nullable(STR),
                "current": INT, "new": INT, "delta": INT, "current_per_day": nullable(NUM), "new_per_day": nullable(NUM),
            }, ("rep_id", "name", "team_current", "team_new", "current", "new", "delta", "current_per_day",
                "new_per_day"))},
            "moved": {"type": "array", "items": obj({"lead_id": STR, "label": STR, "before": placement,
                                                     "after": placement}, ("lead_id", "label", "before", "after"))},
        }, ("leads", "moves", "rule_changes", "current", "new", "span", "teams", "reps", "moved")),
        "PublishRequest": obj({
            "rules": {**rules_text, "description": "rules YAML; default: the configured rules file"},
            "cases": {**rules_text, "description": "test cases YAML (required with rules); default: the file's"},
            "note": note,
        }, closed=True),
        "VersionMeta": version_meta,
        "PublishResult": {"allOf": [version_meta, obj({"active": BOOL, "previous": nullable(INT)},
                                                       ("active", "previous"))]},
        "RollbackRequest": obj({"note": note}, closed=True),
        "HistoryEntry": obj({"action": STR, "number": INT, "previous": nullable(INT), "author": STR, "ts": NUM,
                             "note": STR}, ("action", "number", "previous", "author", "ts", "note")),
        "RollbackResult": {"allOf": [ref("HistoryEntry"), obj({"tag": STR}, ("tag",))]},
        "RulesHistory": obj({
            "active": nullable(INT), "versions": {"type": "array", "items": ref("VersionMeta")},
            "history": {"type": "array", "items": ref("HistoryEntry")},
        }, ("active", "versions", "history")),
        "ActiveRules": obj({
            "source": {"type": "string", "enum": ["published", "file"]}, "number": nullable(INT), "version": STR,
            "author": nullable(STR), "ts": nullable(NUM), "note": STR, "sha256": STR, "content_hash": STR,
            "content": STR, "redacted": {"type": "boolean", "description": "Slack webhook URLs were blanked "
                                                                           "(every role but ops)"},
            "in_force": {"type": "string", "description": "the version this admin process routes with"},
        }, ("source", "number", "version", "author", "ts", "note", "sha256", "content_hash", "content", "redacted",
            "in_force")),
        "Assignment": obj({"assignment_id": STR, "team": STR, "rule": STR, "rules_version": STR,
                           "assigned_ts": nullable(NUM), "accepted_by": nullable(STR)},
                          ("assignment_id", "team", "rule", "rules_version", "assigned_ts", "accepted_by")),
        "LeadState": obj({
            "lead_id": STR, "email": nullable(STR), "stage": STR,
            "score_now": {"type": "number", "description": "the score decayed to this second"},
            "score": {"type": "number", "description": "the stored score, as of score_asof"}, "score_asof": NUM,
            "threshold": NUM, "ready": BOOL, "owner": nullable(STR), "owner_name": nullable(STR),
            "team": nullable(STR), "assignment": nullable(ref("Assignment")), "rejected_by": STR_LIST,
            "fields": {"type": "object", "additionalProperties": STR}, "events": INT,
            "first_seen": nullable(NUM), "last_seen": nullable(NUM), "escalated": BOOL,
            "proposed_fields": {"type": "object", "additionalProperties": STR,
                                "description": "values an unverified source (a form from a new browser) "
                                               "gave that differ from the lead's own: not applied"},
            "review": nullable({"type": "string", "enum": ["held", "released", "dismissed"],
                                "description": "the review state of the lead's latest held crossing"}),
        }, ("lead_id", "email", "stage", "score_now", "score", "score_asof", "threshold", "ready", "owner",
            "owner_name", "team", "assignment", "rejected_by", "fields", "events", "first_seen", "last_seen",
            "escalated")),
        "LeadList": obj({"leads": {"type": "array", "items": ref("LeadState")}}, ("leads",)),
        "FieldChange": obj({
            "field": STR, "old": STR, "new": STR, "source": STR, "ts": NUM, "event_id": STR,
            "verified": {"type": "boolean", "description": "an SDK call with a write key, or a form from the "
                                                           "lead's own browser"},
            "applied": {"type": "boolean", "description": "false: kept beside the lead's own value, not applied"},
        }, ("field", "new", "source", "ts", "verified", "applied"),
            description="old is absent when the lead had no value for the field"),
        "ReviewEntry": obj({
            "lead_id": STR, "email": nullable(STR), "name": nullable(STR), "company": nullable(STR),
            "state": nullable({"type": "string", "enum": ["held", "released", "dismissed"]}), "crossing": INT,
            "held_ts": NUM, "trust": nullable(NUM), "reasons": STR_LIST, "why": STR, "trigger": STR,
            "event": {"type": "object", "description": "the event the crossing was held on: event_id, type, "
                                                       "source, form_id, ts, ip, url, user_agent"},
        }, ("lead_id", "email", "name", "company", "state", "crossing", "held_ts", "trust", "reasons", "why",
            "trigger", "event")),
        "ReviewList": obj({"leads": {"type": "array", "items": ref("ReviewEntry")}}, ("leads",)),
        "Explain": obj({
            "lead_id": STR, "now": NUM, "score_now": NUM, "score": NUM, "score_asof": NUM, "threshold": NUM,
            "half_life_days": NUM, "ready": BOOL,
            "scoring_version": {"type": "string", "description": "the scoring in force that decays the score: "
                                                                 "v<n>:<hash> when published, else the file's hash"},
            "parts": {"type": "array", "items": obj({"rule": STR, "events": INT, "points_earned": NUM,
                                                     "points_now": NUM, "rule_points": nullable(NUM)},
                                                    ("rule", "events", "points_earned", "points_now"))},
            "explained": {"type": "number", "description": "sum of parts: the kept reasons, decayed to now"},
            "residual": {"type": "number", "description": "score_now - explained: reasons no longer kept, merged "
                                                          "profiles and rejection cuts"},
            "reasons": {"type": "array", "items": obj({
                "rule": STR, "detail": STR, "event_type": STR, "event_id": STR, "ts": NUM, "points": NUM,
                "points_now": NUM, "hand_raiser": BOOL,
            }, ("rule", "detail", "event_type", "event_id", "ts", "points", "points_now", "hand_raiser"))},
            "field_history": {"type": "array", "items": ref("FieldChange"),
                              "description": "every change to the lead's fields and every value an unverified "
                                             "source proposed, newest first"},
            "model": nullable(obj({
                "version": STR, "probability": NUM, "base_log_odds": NUM, "log_odds": NUM, "more": INT,
                "contributions": {"type": "array", "items": obj({
                    "feature": STR, "label": STR, "value": STR, "log_odds": NUM, "text": STR,
                }, ("feature", "label", "value", "log_odds", "text"))},
            }, ("version", "probability", "base_log_odds", "log_odds", "contributions", "more"),
                description="the active model's probability for the lead now, with its top exact signed "
                            "contributions in log-odds (base_log_odds + all contributions = log_odds); null "
                            "without an active model")),
        }, ("lead_id", "now", "score_now", "score", "score_asof", "threshold", "half_life_days", "ready", "parts",
            "explained", "residual", "reasons")),
        "Timeline": obj({
            "lead_id": STR,
            "entries": {"type": "array", "items": obj({
                "kind": {"type": "string", "enum": ["event", "history"]}, "ts": NUM,
            }, ("kind", "ts"), description="an event summary (type, url, form_id, ...) or a lifecycle history "
                                           "entry (action, rep, from, to, ...), newest first")},
        }, ("lead_id", "entries")),
        "AcceptRequest": obj({"rep_id": rep_id_body}, closed=True),
        "RejectRequest": obj({"reason": {"type": "string", "minLength": 1, "maxLength": 100,
                                         "description": "one of lifecycle.reject_reasons in routing.yaml"},
                              "rep_id": rep_id_body}, ("reason",), closed=True),
        "ConvertRequest": obj({"to": {"type": "string", "enum": ["sql", "opportunity"],
                                      "description": "target stage (default: the next one)"},
                               "rep_id": rep_id_body}, closed=True),
        "CloseRequest": obj({"reason": {"type": "string", "maxLength": MAX_NOTE}, "rep_id": rep_id_body},
                            closed=True),
        "ReassignRequest": obj({
            "to": {"type": "string", "minLength": 1, "maxLength": MAX_REP_ID,
                   "description": "the new rep's id, as in routing.yaml (not out of office)"},
            "reason": {"type": "string", "minLength": 1, "maxLength": MAX_NOTE,
                       "description": "why; kept in the lead's history with the token's name"},
        }, ("to", "reason"), closed=True),
        "ReassignResult": obj({
            "lead_id": STR, "from_rep": STR, "to_rep": STR, "to_rep_name": STR, "team": STR, "from_stage": STR,
            "assignment_id": STR, "previous_assignment_id": STR, "reason": STR, "by": STR, "ts": NUM,
            "queued": BOOL, "sla_starts": nullable(NUM), "remind_at": nullable(NUM), "deadline_at": nullable(NUM),
        }, ("lead_id", "from_rep", "to_rep", "to_rep_name", "team", "from_stage", "assignment_id",
            "previous_assignment_id", "reason", "by", "ts", "queued", "sla_starts", "remind_at", "deadline_at")),
        "TransitionResult": obj({
            "lead_id": STR, "action": STR, "rep_id": STR, "from": STR, "to": STR, "ts": NUM, "assignment_id": STR,
            "team": STR, "reason": STR, "score_before": nullable(NUM), "score_after": nullable(NUM),
            "outcome_id": nullable(STR), "replayed": BOOL,
        }, ("lead_id", "action", "rep_id", "from", "to", "ts", "assignment_id", "team", "reason", "score_before",
            "score_after", "outcome_id", "replayed")),
    }


def _json(name: str) -> dict[str, Any]:
    return {JSON: {"schema": ref(name)}}


_TRANSITION_BODY = {"accept": "AcceptRequest", "reject": "RejectRequest", "convert": "ConvertRequest",
                    "won": "CloseRequest", "lost": "CloseRequest"}
_TRANSITION_SUMMARY = {
    "accept": "Accept a lead routed to you (mql -> sal)",
    "reject": "Reject a lead with a configured reason (back to nurture; never sent to this rep again)",
    "convert": "Convert a lead (sal -> sql -> opportunity)",
    "won": "Mark an opportunity won (writes a training row)",
    "lost": "Mark a deal lost (writes a training row)",
}

_READ = (400, 401, 403, 404, 503)
_WRITE = (400, 401, 403, 404, 409, 413, 415, 422, 503)

OPERATIONS: tuple[Operation, ...] = (
    Operation("health", "GET", "/healthz", "Liveness: the process answers and Redis replies", "service", None,
              ok={JSON: {"schema": ref("Health")}}, errors=(503,)),
    Operation("openapi", "GET", "/openapi.json", "This OpenAPI document", "service", None,
              ok={JSON: {"schema": {"type": "object"}}}),
    Operation("metrics", "GET", "/metrics", "Prometheus metrics of this process (an ops or readonly token: "
              "scrape with a readonly token)", "service", frozenset({Role.OPS, Role.READONLY}),
              ok={"text/plain": {"schema": STR}}, errors=(401, 403)),
    Operation("action_page", "GET", "/a/{token}", "The page an alert's accept/reject link opens: the lead's name, "
              "company, score and stage, and two buttons (a GET never changes anything, so scanners and link "
              "previews are harmless)", "lifecycle", None,
              ok={"text/html": {"schema": STR}}, params=(P_ACTION_TOKEN,), errors=(400, 404, 409, 410),
              html_errors=(400, 404, 409, 410),
              description="The link is a one-time capability sent only to the assigned rep: it names the rep, the "
                          "lead and the assignment, and expires after LEADROUTER_ALERT_LINK_TTL_S. 409: the lead "
                          "was reassigned or already handled; 410: the link was used or has expired."),
    Operation("action_submit", "POST", "/a/{token}", "Accept or reject the lead the link names, once, as its rep, "
              "while the assignment it names stands", "lifecycle", None, ok={"text/html": {"schema": STR}},
              params=(P_ACTION_TOKEN,),
              body={"application/x-www-form-urlencoded": {"schema": {
                  "type": "object", "required": ["action"],
                  "properties": {"action": {"type": "string", "enum": ["accept", "reject"]},
                                 "reason": {"type": "string", "maxLength": 100}}}}},
              body_required=True, errors=(400, 403, 404, 409, 410, 415, 422),
              html_errors=(400, 403, 404, 409, 410),
              description="Refused (403) when the browser says the form comes from another site (Origin or "
                          "Sec-Fetch-Site). A second use of the same link is a 410 and changes nothing."),
    Operation("whoami", "GET", "/v1/me", "The calling token's role, rep and name", "service", READERS,
              ok=_json("Principal"), errors=(401,)),
    # roster
    Operation("list_teams", "GET", "/v1/teams", "Teams of the routing config in force", "roster", READERS,
              ok=_json("TeamList"), errors=(401, 403, 503)),
    Operation("list_reps", "GET", "/v1/reps", "Reps of the routing config in force", "roster", READERS,
              ok=_json("RepList"),
              params=(Param("team", "query", {"type": "string", "minLength": 1, "maxLength": 100},
                            "only this team's reps"),),
              errors=(400, 401, 403, 404, 503)),
    Operation("get_rep", "GET", "/v1/reps/{rep_id}", "One rep: team, weight, capacity, hours, time zone, out of "
              "office, Slack id, email, open leads", "roster", READERS, ok=_json("Rep"), params=(P_REP,),
              errors=_READ),
    Operation("set_availability", "PATCH", "/v1/reps/{rep_id}/availability",
              "Set or clear a rep's out-of-office override (ops: any rep; rep: themselves)", "roster", OPS_REP,
              ok=_json("Rep"), params=(P_REP,), body=_json("AvailabilityPatch"), body_required=True, errors=_WRITE,
              description="The override is stored in Redis, shown on the rep and honoured by routing: the rep is "
                          "skipped until the override's date (in their own time zone)."),
    # rules
    Operation("validate_rules", "POST", "/v1/rules/validate", "Compile rules YAML; every problem with line and fix",
              "rules", OPS, ok=_json("ValidateResult"),
              body={JSON: {"schema": ref("RulesText")}, "application/yaml": {"schema": ref("RulesYaml")},
                    "text/plain": {"schema": ref("RulesYaml")}},
              body_required=True, errors=_WRITE),
    Operation("test_rules", "POST", "/v1/rules/test", "Compile rules and run test cases against them", "rules",
              OPS, ok=_json("TestResult"), body=_json("TestRequest"), body_required=True, errors=_WRITE),
    Operation("simulate_rules", "POST", "/v1/rules/simulate", "How leads would be shared out under the current and "
              "new rules: per team and rep counts and the leads that move", "rules", OPS,
              ok=_json("SimulateResult"), body=_json("SimulateRequest"), body_required=True, errors=_WRITE),
    Operation("publish_rules", "POST", "/v1/rules/publish", "Validate, test and publish rules as the next version "
              "(author: the token's name)", "rules", OPS, ok=_json("PublishResult"), ok_status=201,
              body=_json("PublishRequest"), errors=_WRITE),
    Operation("rollback_rules", "POST", "/v1/rules/rollback/{version}", "Make an earlier published version active "
              "again", "rules", OPS, ok=_json("RollbackResult"), params=(P_VERSION,),
              body=_json("RollbackRequest"), errors=_WRITE),
    Operation("rules_history", "GET", "/v1/rules/history", "Published versions and every publish and rollback",
              "rules", READERS, ok=_json("RulesHistory"), errors=(401, 403, 503)),
    Operation("rules_active", "GET", "/v1/rules/active", "The rules in force: the published version, else the "
              "rules file", "rules", READERS, ok=_json("ActiveRules"), errors=(401, 403, 503)),
    # leads
    Operation("find_leads", "GET", "/v1/leads", "Find a lead by email, or list a rep's open leads", "leads",
              READERS, ok=_json("LeadList"),
              params=(Param("email", "query", {"type": "string", "minLength": 3, "maxLength": MAX_EMAIL},
                            "the lead's email address"),
                      Param("owner", "query", {"type": "string", "minLength": 1, "maxLength": MAX_REP_ID},
                            "a rep id: their open leads, newest first (rep tokens: default themselves)"),
                      p_limit(50, "leads")),
              errors=_READ,
              description="Rep tokens see only leads they own: asking for another rep's lead or leads is a 403."),
    Operation("get_lead", "GET", "/v1/leads/{lead_id}", "A lead's stage, owner, assignment and score now",
              "leads", READERS, ok=_json("LeadState"), params=(P_LEAD,), errors=_READ),
    Operation("explain_lead", "GET", "/v1/leads/{lead_id}/explain", "The score now, its parts per scoring rule and "
              "the top reasons, decayed to now", "leads", READERS, ok=_json("Explain"),
              params=(P_LEAD, p_limit(10, "reasons")), errors=_READ),
    Operation("lead_timeline", "GET", "/v1/leads/{lead_id}/timeline", "Recent events and lifecycle history, "
              "newest first", "leads", READERS, ok=_json("Timeline"), params=(P_LEAD, p_limit(100, "entries")),
              errors=_READ),
    # review queue (router/worker/review.py)
    Operation("list_review", "GET", "/v1/review", "Hand-raisers held for review instead of a rep, oldest first, "
              "with the trust and its reasons", "review", OPS, ok=_json("ReviewList"),
              params=(p_limit(100, "leads"),), errors=_READ),
    Operation("release_review", "POST", "/v1/review/{lead_id}/release", "Release a held lead: a worker routes it "
              "normally within seconds (rules, team strategy, alert)", "review", OPS, ok=_json("ReviewEntry"),
              params=(P_LEAD,), errors=_WRITE),
    Operation("dismiss_review", "POST", "/v1/review/{lead_id}/dismiss", "Dismiss a held lead as spam: its "
              "crossing is closed (nurture, not ready) and nobody is alerted", "review", OPS,
              ok=_json("ReviewEntry"), params=(P_LEAD,), errors=_WRITE),
    *(Operation(f"{action}_lead", "POST", f"/v1/leads/{{lead_id}}/{action}", _TRANSITION_SUMMARY[action],
                "lifecycle", OPS_REP, ok=_json("TransitionResult"), params=(P_LEAD,),
                body=_json(_TRANSITION_BODY[action]), body_required=action == "reject", errors=_WRITE,
                description="Rep tokens act on their own leads as themselves; ops tokens act as the lead's owner "
                            "(or as rep_id).")
      for action in LIFECYCLE_ACTIONS),
    Operation("crm_webhook", "POST", "/v1/webhooks/crm", "A CRM reports an outcome: opportunity won, lost or "
              "converted, sales accepted or rejected (signed with HMAC-SHA256, no bearer token)", "lifecycle", None,
              ok={JSON: {"schema": obj({"ok": BOOL, "lead_id": STR, "event": STR,
                                        "steps": {"type": "array", "items": ref("TransitionResult")}},
                                       ("ok", "lead_id", "event", "steps"))}},
              body={JSON: {"schema": obj({
                  "event": {"type": "string", "enum": ["opportunity.won", "opportunity.lost",
                                                       "opportunity.converted", "sales.accepted",
                                                       "sales.rejected"]},
                  "lead": {"type": "string", "maxLength": 320, "description": "the lead's email or lead id"},
                  "reason": {"type": "string", "maxLength": 500},
                  "id": {"type": "string", "maxLength": 200, "description": "the CRM's delivery id (logged)"},
              }, ("event", "lead"), closed=True)}}, body_required=True, errors=(400, 401, 404, 409, 413, 422, 503),
              description="Headers: X-LeadRouter-Timestamp (unix seconds) and X-LeadRouter-Signature "
                          "(sha256=hex of HMAC-SHA256 with LEADROUTER_ADMIN_CRM_WEBHOOK_SECRET over "
                          "'<timestamp>.' followed by the raw body). A timestamp further than "
                          "LEADROUTER_ADMIN_CRM_WEBHOOK_WINDOW_S from now, a delivery seen before, a bad signature "
                          "or a body over LEADROUTER_ADMIN_CRM_WEBHOOK_MAX_BYTES is refused. The lead moves through "
                          "the lifecycle steps the outcome implies, acting as its owner."),
    Operation("reassign", "POST", "/v1/leads/{lead_id}/reassign", "Move an open lead to another rep by hand, "
              "with a reason (ops only)", "lifecycle", OPS, ok=_json("ReassignResult"), params=(P_LEAD,),
              body=_json("ReassignRequest"), body_required=True, errors=_WRITE,
              description="Recorded in the lead's history with the token's name, the time and the reason; the "
                          "SLA restarts for the new rep, who is alerted, and the old rep's pending SLA steps are "
                          "cancelled. A rep out of office is refused (409)."),
)

_STATUS_TEXT = {400: "Bad request: malformed JSON, a wrong type, an unknown key or parameter",
                401: "Missing, malformed, unknown or expired bearer token (the CRM webhook: a missing, stale or "
                     "wrong signature)", 403: "The token's role may not do this",
                404: "No such lead, rep or version", 409: "The state does not allow it (stage, owner, active version)",
                410: "The alert link was used already or has expired",
                413: "Body, rules text or lead list too large", 415: "Unsupported Content-Type",
                422: "Well-formed but invalid: rules that do not compile or pass, an unknown reason or date",
                503: "Redis is unavailable"}


def operation(op_id: str) -> Operation:
    for op in OPERATIONS:
        if op.op_id == op_id:
            return op
    raise KeyError(op_id)


def _role_text(roles: frozenset[Role] | None) -> str:
    if roles is None:
        return "No token needed."
    return "Roles: " + ", ".join(r.value for r in Role if r in roles) + "."


def build_spec(settings: Settings, server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of :data:`OPERATIONS`."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        entry: dict[str, Any] = {
            "operationId": op.op_id,
            "summary": op.summary,
            "tags": [op.tag],
            "description": " ".join(x for x in (op.description, _role_text(op.roles)) if x),
            "x-roles": sorted(r.value for r in op.roles) if op.roles is not None else [],
            "responses": {str(op.ok_status): {"description": "OK", "content": dict(op.ok)}},
        }
        if op.roles is None:
            entry["security"] = []
        if op.params:
            entry["parameters"] = [p.to_openapi() for p in op.params]
        if op.body is not None:
            entry["requestBody"] = {"required": op.body_required,
                                    "content": {mt: {"schema": s["schema"]} for mt, s in op.body.items()}}
        for status in op.errors:
            content = _json("Error")
            if status in op.html_errors:
                content = {"text/html": {"schema": STR}, **content}
            entry["responses"][str(status)] = {"description": _STATUS_TEXT[status], "content": content}
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "leadrouter admin API",
            "version": "1",
            "description": "Roster, routing rules, leads and their lifecycle, for ops staff and reps. Send "
                           "'Authorization: Bearer <token>' (tokens: `leadrouter admin token create`). Errors are "
                           "JSON {error, detail}. Roles: ops (everything), rep (roster and rules read; their own "
                           "leads and availability), readonly (GETs only).",
        },
        "paths": paths,
        "components": {
            "schemas": components(settings),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "an admin token: lra_..."}},
        },
        "security": [{"bearerAuth": []}],
    }
    if server_url:
        spec["servers"] = [{"url": server_url}]
    return spec


__all__ = [
    "LEAD_ID_PATTERN",
    "LIFECYCLE_ACTIONS",
    "MAX_EMAIL",
    "MAX_LIMIT",
    "MAX_NOTE",
    "MAX_REP_ID",
    "OPERATIONS",
    "OPS",
    "OPS_REP",
    "READERS",
    "VERSION_PATTERN",
    "Operation",
    "Param",
    "build_spec",
    "components",
    "operation",
]
