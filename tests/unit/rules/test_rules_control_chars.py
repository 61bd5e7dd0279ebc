"""Rules text with a control character is a RulesError naming the file, not a crash."""

import pytest

import rules


def test_a_control_character_is_reported_not_raised_as_a_yaml_reader_error() -> None:
    with pytest.raises(rules.RulesError, match=r"(?s)routing\.yaml:1: YAML syntax error.*remove control characters"):
        rules.load_routing('version: "1"\x04\n', "routing.yaml")
