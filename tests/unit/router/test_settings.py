"""load_settings: the environment read once into typed, frozen settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from router.errors import SettingsError
from router.settings import DEFAULT_RULES, DEFAULT_SCORING, Settings, load_settings, require_token_secret

# --------------------------------------------------------------------------- defaults


def test_empty_environment_gives_the_defaults() -> None:
    s = load_settings({})
    assert s == Settings()
    assert s.explicit == frozenset()
    assert s.kafka_url == "kafka://127.0.0.1:9092"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.collector_port == 8080
    assert s.cookie_secure is False


def test_default_config_files_are_the_shipped_ones() -> None:
    s = load_settings({})
    assert s.scoring_file == DEFAULT_SCORING
    assert s.rules_file == DEFAULT_RULES
    assert DEFAULT_SCORING.is_file()
    assert DEFAULT_RULES.is_file()


def test_unrelated_variables_are_ignored() -> None:
    assert load_settings({"PATH": "/usr/bin", "HOME": "/root", "LEADROUTERX": "1"}) == Settings()


def test_settings_are_frozen() -> None:
    s = load_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.collector_port = 1  # type: ignore[misc]


def test_reads_os_environ_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADROUTER_COLLECTOR_PORT", "9123")
    assert load_settings().collector_port == 9123


# --------------------------------------------------------------------------- typed parsing


def test_prefixed_names_set_typed_values() -> None:
    s = load_settings({
        "LEADROUTER_COLLECTOR_PORT": "9000",
        "LEADROUTER_WORKER_BATCH_WINDOW_S": "0.5",
        "LEADROUTER_ALERT_BACKOFF_S": "2",
        "LEADROUTER_COOKIE_SECURE": "yes",
        "LEADROUTER_SCORING_FILE": "/etc/leadrouter/scoring.yaml",
        "LEADROUTER_APP_ID": "lr-prod",
    })
    assert s.collector_port == 9000 and type(s.collector_port) is int
    assert s.worker_batch_window_s == 0.5 and type(s.worker_batch_window_s) is float
    assert s.alert_backoff_s == 2.0 and type(s.alert_backoff_s) is float
    assert s.cookie_secure is True
    assert s.scoring_file == Path("/etc/leadrouter/scoring.yaml")
    assert isinstance(s.scoring_file, Path)
    assert s.app_id == "lr-prod"


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", True), ("true", True), ("TRUE", True), (" yes ", True), ("On", True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("", False),
])
def test_bool_words(raw: str, expected: bool) -> None:
    assert load_settings({"LEADROUTER_SMTP_STARTTLS": raw}).smtp_starttls is expected


def test_bad_bool_names_the_variable_and_value() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({"LEADROUTER_COOKIE_SECURE": "maybe"})
    msg = str(exc.value)
    assert "LEADROUTER_COOKIE_SECURE='maybe'" in msg
    assert "not a boolean" in msg


@pytest.mark.parametrize(("name", "raw", "kind"), [
    ("LEADROUTER_COLLECTOR_PORT", "eighty", "int"),
    ("LEADROUTER_COLLECTOR_PORT", "80.5", "int"),
    ("LEADROUTER_TOPIC_PARTITIONS", "", "int"),
    ("LEADROUTER_ALERT_TIMEOUT_S", "10s", "float"),
])
def test_bad_number_names_the_variable_and_value(name: str, raw: str, kind: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({name: raw})
    assert f"{name}={raw!r} is not a valid {kind}" in str(exc.value)


@pytest.mark.parametrize(("name", "raw"), [("LEADROUTER_SMTP_PORT", "-25"), ("LEADROUTER_ALERT_BACKOFF_S", "-0.1")])
def test_negative_numbers_are_refused(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}={raw!r} must not be negative"):
        load_settings({name: raw})


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_non_finite_floats_are_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="LEADROUTER_ALERT_TIMEOUT_S"):
        load_settings({"LEADROUTER_ALERT_TIMEOUT_S": raw})


@pytest.mark.parametrize(("name", "raw"), [
    ("LEADROUTER_TOPIC_PARTITIONS", "0"),
    ("LEADROUTER_ALERT_MAX_ATTEMPTS", "0"),
])
def test_counts_must_be_at_least_one(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}=0 must be at least 1"):
        load_settings({name: raw})


@pytest.mark.parametrize(("env", "needle"), [
    ({"KAFKA_URL": "127.0.0.1:9092"}, "KAFKA_URL='127.0.0.1:9092' must start with kafka://"),
    ({"LEADROUTER_REDIS_URL": "localhost:6379"}, "REDIS_URL='localhost:6379' must start with redis://"),
])
def test_urls_must_have_a_scheme(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(env)
    assert needle in str(exc.value)


def test_other_url_schemes_are_accepted() -> None:
    s = load_settings({"KAFKA_URL": "aiokafka://k:9092", "REDIS_URL": "rediss://r:6380/1"})
    assert s.kafka_url == "aiokafka://k:9092"
    assert s.redis_url == "rediss://r:6380/1"
    assert load_settings({"REDIS_URL": "unix:///run/redis.sock"}).redis_url == "unix:///run/redis.sock"


# --------------------------------------------------------------------------- aliases


def test_well_known_aliases_are_honoured() -> None:
    s = load_settings({
        "KAFKA_URL": "kafka://k1:9092",
        "REDIS_URL": "redis://r1:6379/2",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x",
        "SLACK_BOT_TOKEN": "xoxb-1",
    })
    assert s.kafka_url == "kafka://k1:9092"
    assert s.redis_url == "redis://r1:6379/2"
    assert s.slack_webhook_url == "https://hooks.slack.com/services/T/B/x"
    assert s.slack_bot_token == "xoxb-1"
    assert s.explicit == {"kafka_url", "redis_url", "slack_webhook_url", "slack_bot_token"}


def test_prefixed_name_wins_over_the_alias() -> None:
    env = {
        "KAFKA_URL": "kafka://alias:9092",
        "LEADROUTER_KAFKA_URL": "kafka://prefixed:9092",
        "LEADROUTER_REDIS_URL": "redis://prefixed:6379/0",
        "REDIS_URL": "redis://alias:6379/0",
    }
    s = load_settings(env)
    assert s.kafka_url == "kafka://prefixed:9092"
    assert s.redis_url == "redis://prefixed:6379/0"
    # Whatever the order the mapping lists them in.
    s2 = load_settings(dict(reversed(list(env.items()))))
    assert (s2.kafka_url, s2.redis_url) == (s.kafka_url, s.redis_url)


def test_empty_alias_is_ignored() -> None:
    s = load_settings({"KAFKA_URL": "", "REDIS_URL": ""})
    assert s.kafka_url == Settings().kafka_url
    assert s.explicit == frozenset()


# --------------------------------------------------------------------------- unknown names


@pytest.mark.parametrize(("name", "suggestion"), [
    ("LEADROUTER_KAFKA_URI", "LEADROUTER_KAFKA_URL"),
    ("LEADROUTER_REDIS", "LEADROUTER_REDIS_URL"),
    ("LEADROUTER_SLACK_WEBHOOK", "LEADROUTER_SLACK_WEBHOOK_URL"),
])
def test_unknown_prefixed_name_suggests_a_known_one(name: str, suggestion: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({name: "x"})
    msg = str(exc.value)
    assert msg.startswith(f"unknown setting {name}")
    assert f"did you mean {suggestion}" in msg


def test_unknown_name_without_a_close_match_has_no_hint() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({"LEADROUTER_ZZZ": "1"})
    assert str(exc.value) == "unknown setting LEADROUTER_ZZZ"


def test_explicit_cannot_be_set_from_the_environment() -> None:
    with pytest.raises(SettingsError, match="unknown setting LEADROUTER_EXPLICIT"):
        load_settings({"LEADROUTER_EXPLICIT": "kafka_url"})


def test_did_you_mean_picks_the_closest_name() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({"LEADROUTER_TOPIC_PARTITION": "8"})
    assert "did you mean LEADROUTER_TOPIC_PARTITIONS?" in str(exc.value)


def test_explicit_is_never_suggested() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({"LEADROUTER_EXPLICIT": "kafka_url"})
    assert "did you mean LEADROUTER_EXPLICIT" not in str(exc.value)


# --------------------------------------------------------------------------- explicit / kafka_bootstrap


def test_explicit_names_exactly_the_fields_the_environment_set() -> None:
    s = load_settings({"LEADROUTER_COLLECTOR_PORT": "8080", "REDIS_URL": "redis://r:1/0", "OTHER": "x"})
    # Set to the default value still counts as set.
    assert s.explicit == {"collector_port", "redis_url"}


@pytest.mark.parametrize(("url", "bootstrap"), [
    ("kafka://127.0.0.1:9092", "127.0.0.1:9092"),
    ("kafka://a:1;kafka://b:2", "a:1,b:2"),
    ("aiokafka://broker:29092;", "broker:29092"),
])
def test_kafka_bootstrap(url: str, bootstrap: str) -> None:
    assert load_settings({"KAFKA_URL": url}).kafka_bootstrap == bootstrap


def test_with_returns_a_changed_copy() -> None:
    s = Settings()
    t = s.with_(collector_port=1234)
    assert t.collector_port == 1234
    assert s.collector_port == 8080


# --------------------------------------------------------------------------- to_env


def test_to_env_round_trips_the_defaults() -> None:
    s = Settings()
    env = s.to_env()
    assert "LEADROUTER_EXPLICIT" not in env
    back = load_settings(env)
    assert dataclasses.replace(back, explicit=frozenset()) == s
    names = {f.name for f in dataclasses.fields(Settings)} - {"explicit"}
    assert back.explicit == names


def test_to_env_round_trips_changed_values() -> None:
    s = Settings(
        kafka_url="kafka://10.0.0.1:9093;kafka://10.0.0.2:9093",
        redis_url="redis://10.0.0.3:6380/4",
        topic_partitions=12,
        worker_batch_window_s=0.125,
        broker_session_timeout_s=3.5,
        cookie_secure=True,
        smtp_starttls=True,
        token_secret="s3cr3t-with spaces=and;punct",
        scoring_file=Path("/srv/conf/scoring.yaml"),
        rules_file=Path("relative/routing.yaml"),
        slack_webhook_url="https://hooks.example/x?y=z",
        alert_backoff_s=1e-05,
    )
    env = s.to_env()
    assert env["LEADROUTER_COOKIE_SECURE"] == "1"
    assert env["LEADROUTER_SMTP_STARTTLS"] == "1"
    assert env["KAFKA_URL"] == s.kafka_url
    assert env["REDIS_URL"] == s.redis_url
    assert all(isinstance(v, str) for v in env.values())
    back = load_settings(env)
    assert dataclasses.replace(back, explicit=frozenset()) == s


def test_to_env_writes_false_as_zero() -> None:
    env = Settings(cookie_secure=False).to_env()
    assert env["LEADROUTER_COOKIE_SECURE"] == "0"
    assert load_settings(env).cookie_secure is False


# --------------------------------------------------------------------------- token secret


def test_require_token_secret_returns_a_long_secret() -> None:
    secret = "x" * 16
    assert require_token_secret(load_settings({"LEADROUTER_TOKEN_SECRET": secret})) == secret


@pytest.mark.parametrize("secret", ["", "short", "x" * 15])
def test_require_token_secret_refuses_missing_or_short(secret: str) -> None:
    with pytest.raises(SettingsError) as exc:
        require_token_secret(Settings(token_secret=secret))
    msg = str(exc.value)
    assert "LEADROUTER_TOKEN_SECRET" in msg
    assert "16 characters" in msg
    assert "secrets.token_urlsafe" in msg
