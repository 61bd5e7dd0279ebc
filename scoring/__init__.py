"""Lead scoring: pure logic over ``models``.

Load the ops-edited points table with :func:`load_scoring_config`, turn events
into reasons with :func:`score_event`, and keep scores with the exact decay
math in :mod:`scoring.decay` (mirrored by the Redis Lua script).

Caps (``cap_per_day``, ``once_per_lead``, ``daily_cap``) are applied by
:func:`apply_caps` to the hits of :func:`score_event_hits`; the sales-ready
rule is :func:`is_sales_ready` over :class:`ReadyClause` (JSON for Lua:
:func:`ready_clauses_json`); the fit grade is :func:`fit_grade` over the
ideal customer profile loaded by :func:`load_icp_config`, with job titles
read by :func:`classify_title`.  The shapes it hands on (:class:`RuleHit`,
:class:`FitGrade`) live in :mod:`models.score` and are re-exported here.
"""

from models.score import FitGrade, RuleHit
from scoring.caps import CapResult, apply_caps, apply_caps_detailed, day_bucket, hits_json
from scoring.config import (
    DEFAULT_HALF_LIFE_DAYS,
    RULE_KEYS,
    TOP_KEYS,
    ScoringConfig,
    ScoringRule,
    load_scoring_config,
)
from scoring.decay import NO_SCORE, add_points, decay_factor, score_at
from scoring.errors import DecayError, IcpConfigError, ScoringConfigError, ScoringError
from scoring.icp import IcpConfig, fit_grade, load_icp_config, parse_employees
from scoring.points import (
    describe_event,
    is_hand_raiser,
    machine_discount,
    rule_matches,
    score_event,
    score_event_hits,
    total_points,
    url_target,
)
from scoring.ready import (
    HELD_STAGES,
    REENGAGE_STAGES,
    ReadyClause,
    Reengage,
    SalesReady,
    clauses_from_json,
    is_sales_ready,
    ready_clauses_json,
    reengage_json,
    should_recycle,
)
from scoring.titles import DEPARTMENTS, SENIORITIES, Department, Seniority, classify_title

__all__ = [
    "DEFAULT_HALF_LIFE_DAYS",
    "DEPARTMENTS",
    "HELD_STAGES",
    "NO_SCORE",
    "REENGAGE_STAGES",
    "RULE_KEYS",
    "SENIORITIES",
    "TOP_KEYS",
    "CapResult",
    "DecayError",
    "Department",
    "FitGrade",
    "IcpConfig",
    "IcpConfigError",
    "ReadyClause",
    "Reengage",
    "RuleHit",
    "SalesReady",
    "ScoringConfig",
    "ScoringConfigError",
    "ScoringError",
    "ScoringRule",
    "Seniority",
    "add_points",
    "apply_caps",
    "apply_caps_detailed",
    "classify_title",
    "clauses_from_json",
    "day_bucket",
    "decay_factor",
    "describe_event",
    "fit_grade",
    "hits_json",
    "is_hand_raiser",
    "is_sales_ready",
    "load_icp_config",
    "load_scoring_config",
    "machine_discount",
    "parse_employees",
    "ready_clauses_json",
    "reengage_json",
    "rule_matches",
    "score_at",
    "score_event",
    "score_event_hits",
    "should_recycle",
    "total_points",
    "url_target",
]
