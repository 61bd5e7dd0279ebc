"""Errors raised while loading routing rules and rule test cases.

Every problem in a file is collected before anything is raised: the one error
raised lists each problem on its own line (``.problems``), formatted as
``routing.yaml:14: rule 'emea-enterprise': unknown field 'contry'; did you mean 'country'?``.
The class raised is the most specific class every problem shares, so a file
with only unknown fields raises :class:`UnknownFieldError`, a mixed bag raises
:class:`RulesError`.
"""

from __future__ import annotations

from collections.abc import Sequence


class RulesError(Exception):
    """Root of every error raised by ``rules``; ``problems`` holds one line per problem."""

    def __init__(self, msg: str, problems: Sequence[str] | None = None) -> None:
        super().__init__(msg)
        self.problems: tuple[str, ...] = tuple(problems) if problems else (msg,)


class RuleSyntaxError(RulesError):
    """The YAML does not parse, or its shape is wrong: unknown or missing keys, wrong nesting."""


class MissingDescriptionError(RuleSyntaxError):
    """A rule or team has no description."""


class UnknownFieldError(RulesError):
    """A condition or test case names a lead field that is not in the catalogue."""


class RuleTypeError(RulesError):
    """A value does not fit its field's type, or an operator does not fit the field."""


class InvalidRegexError(RuleTypeError):
    """A ``regex`` condition does not compile."""


class DuplicateNameError(RulesError):
    """Two rules, test cases or reps share a name or id, or a YAML mapping repeats a key."""


class ShadowedRuleError(RulesError):
    """A rule can never match because an earlier rule matches every lead it would."""


class NoRulesError(RulesError):
    """The file declares no rules."""


class MissingCatchAllError(RulesError):
    """The last rule is not ``when: always``, so a lead could fall through every rule."""


class EmptyTeamError(RulesError):
    """A team has no reps to assign leads to."""


class UnknownTeamError(RulesError):
    """A rule or test case names a team that is not declared."""


class UnknownRuleError(RulesError):
    """A test case expects a rule that is not declared."""
