"""Routing rules: which team gets a lead, as ops staff write it in ``routing.yaml``.

Pure logic over ``models``: callers hand in the file's text, the package never
reads files itself.  Everything is compiled and type-checked at load.
"""

from rules.cases import RuleTestCase, RuleTestResult, load_rule_tests, run_rule_tests
from rules.catalogue import FIELDS, ISO_COUNTRY_CODES, FieldSpec, FieldType, coerce_fact, facts_from_lead
from rules.conditions import AllOf, Always, AnyOf, Condition, Equals, Exists, In, Not, Range, Regex
from rules.engine import CompiledRule, RoutingConfig, Team, load_routing
from rules.errors import (
    DuplicateNameError,
    EmptyTeamError,
    InvalidRegexError,
    MissingCatchAllError,
    MissingDescriptionError,
    NoRulesError,
    RulesError,
    RuleSyntaxError,
    RuleTypeError,
    ShadowedRuleError,
    UnknownFieldError,
    UnknownRuleError,
    UnknownTeamError,
)
from rules.roster import (
    DateRange,
    LifecyclePolicy,
    Manager,
    RepProfile,
    SlaPolicy,
    Strategy,
    Unavailable,
    WorkingHours,
)

__all__ = [
    "FIELDS",
    "ISO_COUNTRY_CODES",
    "AllOf",
    "Always",
    "AnyOf",
    "CompiledRule",
    "Condition",
    "DateRange",
    "DuplicateNameError",
    "EmptyTeamError",
    "Equals",
    "Exists",
    "FieldSpec",
    "FieldType",
    "In",
    "InvalidRegexError",
    "LifecyclePolicy",
    "Manager",
    "MissingCatchAllError",
    "MissingDescriptionError",
    "NoRulesError",
    "Not",
    "Range",
    "Regex",
    "RepProfile",
    "RoutingConfig",
    "RuleSyntaxError",
    "RuleTestCase",
    "RuleTestResult",
    "RuleTypeError",
    "RulesError",
    "ShadowedRuleError",
    "SlaPolicy",
    "Strategy",
    "Team",
    "Unavailable",
    "UnknownFieldError",
    "UnknownRuleError",
    "UnknownTeamError",
    "WorkingHours",
    "coerce_fact",
    "facts_from_lead",
    "load_routing",
    "load_rule_tests",
    "run_rule_tests",
]
