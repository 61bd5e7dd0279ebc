"""load_settings: the environment read once into typed, frozen settings in sections."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from router.errors import SettingsError
from router.settings import (
    DEFAULT_RULES,
    DEFAULT_SCORING,
    FIELDS,
    AdminSettings,
    KafkaSettings,
    RedisSettings,
    Settings,
    SpoolSettings,
    WorkerSettings,
    env_name,
    load_settings,
    require_token_secret,
)
from router.storage.redis import RedisRole, create_redis, create_sync_redis, timeouts

# --------------------------------------------------------------------------- defaults


def test_empty_environment_gives_the_defaults() -> None:
    s = load_settings({})
    assert s == Settings()
    assert s.explicit == frozenset()
    assert s.kafka.url == "kafka://127.0.0.1:9092"
    assert s.redis.url == "redis://127.0.0.1:6379/0"
    assert s.ingest.collector_port == 8080
    assert s.ingest.cookie_secure is False


def test_default_config_files_are_the_shipped_ones() -> None:
    s = load_settings({})
    assert s.files.scoring_file == DEFAULT_SCORING
    assert s.files.rules_file == DEFAULT_RULES
    assert DEFAULT_SCORING.is_file()
    assert DEFAULT_RULES.is_file()


def test_unrelated_variables_are_ignored() -> None:
    assert load_settings({"PATH": "/usr/bin", "HOME": "/root", "LEADROUTERX": "1"}) == Settings()


def test_settings_are_frozen() -> None:
    s = load_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.ingest.collector_port = 1  # type: ignore[misc]


def test_reads_os_environ_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADROUTER_COLLECTOR_PORT", "9123")
    assert load_settings().ingest.collector_port == 9123


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
    assert s.ingest.collector_port == 9000 and type(s.ingest.collector_port) is int
    assert s.worker.batch_window_s == 0.5 and type(s.worker.batch_window_s) is float
    assert s.alerts.backoff_s == 2.0 and type(s.alerts.backoff_s) is float
    assert s.ingest.cookie_secure is True
    assert s.files.scoring_file == Path("/etc/leadrouter/scoring.yaml")
    assert isinstance(s.files.scoring_file, Path)
    assert s.kafka.app_id == "lr-prod"


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", True), ("true", True), ("TRUE", True), (" yes ", True), ("On", True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("", False),
])
def test_bool_words(raw: str, expected: bool) -> None:
    assert load_settings({"LEADROUTER_SMTP_STARTTLS": raw}).alerts.smtp_starttls is expected


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
    ("LEADROUTER_ADMIN_CONSOLE_LIVE_STREAMS_PER_SESSION", "0"),
    ("LEADROUTER_ADMIN_CONSOLE_LIVE_STREAMS_MAX", "0"),
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
    assert s.kafka.url == "aiokafka://k:9092"
    assert s.redis.url == "rediss://r:6380/1"
    assert load_settings({"REDIS_URL": "unix:///run/redis.sock"}).redis.url == "unix:///run/redis.sock"


# --------------------------------------------------------------------------- aliases


def test_well_known_aliases_are_honoured() -> None:
    s = load_settings({
        "KAFKA_URL": "kafka://k1:9092",
        "REDIS_URL": "redis://r1:6379/2",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x",
        "SLACK_BOT_TOKEN": "xoxb-1",
    })
    assert s.kafka.url == "kafka://k1:9092"
    assert s.redis.url == "redis://r1:6379/2"
    assert s.alerts.slack_webhook_url == "https://hooks.slack.com/services/T/B/x"
    assert s.alerts.slack_bot_token == "xoxb-1"
    assert s.explicit == {"kafka_url", "redis_url", "slack_webhook_url", "slack_bot_token"}


def test_prefixed_name_wins_over_the_alias() -> None:
    env = {
        "KAFKA_URL": "kafka://alias:9092",
        "LEADROUTER_KAFKA_URL": "kafka://prefixed:9092",
        "LEADROUTER_REDIS_URL": "redis://prefixed:6379/0",
        "REDIS_URL": "redis://alias:6379/0",
    }
    s = load_settings(env)
    assert s.kafka.url == "kafka://prefixed:9092"
    assert s.redis.url == "redis://prefixed:6379/0"
    # Whatever the order the mapping lists them in.
    s2 = load_settings(dict(reversed(list(env.items()))))
    assert (s2.kafka.url, s2.redis.url) == (s.kafka.url, s.redis.url)


def test_empty_alias_is_ignored() -> None:
    s = load_settings({"KAFKA_URL": "", "REDIS_URL": ""})
    assert s.kafka.url == Settings().kafka.url
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
    assert load_settings({"KAFKA_URL": url}).kafka.bootstrap == bootstrap


# --------------------------------------------------------------------------- to_env


def test_to_env_round_trips_the_defaults() -> None:
    s = Settings()
    env = s.to_env()
    assert "LEADROUTER_EXPLICIT" not in env
    assert set(env) == {env_name(flat) for flat in FIELDS} | {"KAFKA_URL", "REDIS_URL"}
    back = load_settings(env)
    assert dataclasses.replace(back, explicit=frozenset()) == s
    assert back.explicit == set(FIELDS)


def test_to_env_round_trips_changed_values() -> None:
    s = Settings.of(
        kafka_url="kafka://10.0.0.1:9093;kafka://10.0.0.2:9093",
        redis_url="redis://10.0.0.3:6380/4",
        topic_partitions=12,
        worker_batch_window_s=0.125,
        broker_session_timeout_s=3.5,
        cookie_secure=True,
        smtp_starttls=True,
        token_secret="s3cr3t-with spaces=and;punct",
        scoring_file=Path("/srv/conf/scoring.yaml"),
        rules_file="relative/routing.yaml",
        slack_webhook_url="https://hooks.example/x?y=z",
        alert_backoff_s=1e-05,
        unique_identifiers=("email", "user_id"),
        segment_write_keys="wk1, rwk=rudderstack",
        segment_form_events=("Webinar Registered", "Trial Started"),
        snowplow_app_ids="site,app",
        machine_networks="10.0.0.0/8 2001:db8::/32",
        digest_triggers="account-intent,threshold",
        spool_fsync="interval",
        slack_pacer="local",
        redis_collector_timeout_s=0.25,
    )
    env = s.to_env()
    assert env["LEADROUTER_COOKIE_SECURE"] == "1"
    assert env["LEADROUTER_SMTP_STARTTLS"] == "1"
    assert env["LEADROUTER_SEGMENT_WRITE_KEYS"] == "wk1=segment,rwk=rudderstack"
    assert env["LEADROUTER_MACHINE_NETWORKS"] == "10.0.0.0/8,2001:db8::/32"
    assert env["LEADROUTER_UNIQUE_IDENTIFIERS"] == "email,user_id"
    assert env["KAFKA_URL"] == s.kafka.url
    assert env["REDIS_URL"] == s.redis.url
    assert all(isinstance(v, str) for v in env.values())
    back = load_settings(env)
    assert dataclasses.replace(back, explicit=frozenset()) == s


def test_to_env_writes_false_as_zero() -> None:
    env = Settings.of(cookie_secure=False).to_env()
    assert env["LEADROUTER_COOKIE_SECURE"] == "0"
    assert load_settings(env).ingest.cookie_secure is False


# --------------------------------------------------------------------------- sections


def test_every_flat_name_maps_to_one_section_field() -> None:
    s = Settings()
    targets = list(FIELDS.values())
    assert len(targets) == len(set(targets))
    for flat, (section, name) in FIELDS.items():
        owner = getattr(s, section) if section else s
        assert hasattr(owner, name), flat
    section_fields = {(f.name, g.name) for f in dataclasses.fields(Settings) if f.name not in ("log_level", "explicit")
                      for g in dataclasses.fields(getattr(s, f.name))}
    assert section_fields | {("", "log_level")} == set(targets)


@pytest.mark.parametrize(("flat", "section", "name"), [
    ("kafka_url", "kafka", "url"),
    ("topic_events", "kafka", "topic_events"),
    ("redis_url", "redis", "url"),
    ("redis_socket_timeout_s", "redis", "socket_timeout_s"),
    ("worker_batch_size", "worker", "batch_size"),
    ("unique_identifiers", "worker", "unique_identifiers"),
    ("collector_port", "ingest", "collector_port"),
    ("spool_dir", "spool", "dir"),
    ("rules_file", "files", "rules_file"),
    ("token_secret", "tokens", "secret"),
    ("alert_max_attempts", "alerts", "max_attempts"),
    ("admin_url", "alerts", "admin_url"),
    ("admin_port", "admin", "port"),
])
def test_env_names_keep_their_flat_names(flat: str, section: str, name: str) -> None:
    assert FIELDS[flat] == (section, name)
    assert env_name(flat) == f"LEADROUTER_{flat.upper()}"


def test_sections_are_typed_and_frozen() -> None:
    s = load_settings({"LEADROUTER_WORKER_BATCH_SIZE": "64", "LEADROUTER_SPOOL_DIR": "/var/spool/lr",
                       "LEADROUTER_ADMIN_PORT": "9001", "LEADROUTER_TOKEN_SECRET": "x" * 20})
    assert isinstance(s.worker, WorkerSettings) and s.worker.batch_size == 64
    assert isinstance(s.spool, SpoolSettings) and s.spool.dir == Path("/var/spool/lr")
    assert isinstance(s.admin, AdminSettings) and s.admin.port == 9001
    assert s.tokens.require_secret() == "x" * 20
    assert s.value("admin_port") == 9001
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.worker.batch_size = 1  # type: ignore[misc]
    assert isinstance(s.kafka, KafkaSettings) and isinstance(s.redis, RedisSettings)


def test_comma_separated_values_become_typed_tuples() -> None:
    s = load_settings({
        "LEADROUTER_UNIQUE_IDENTIFIERS": " email , user_id ",
        "LEADROUTER_SEGMENT_WRITE_KEYS": " a , b=rudderstack,, c= ",
        "LEADROUTER_SEGMENT_FORM_EVENTS": "Webinar Registered, Trial Started",
        "LEADROUTER_SNOWPLOW_APP_IDS": "site, ,app",
        "LEADROUTER_MACHINE_NETWORKS": "192.0.2.9/24, 2001:db8::/32\n10.0.0.1",
        "LEADROUTER_DIGEST_TRIGGERS": "threshold, account-intent",
    })
    assert s.worker.unique_identifiers == frozenset({"email", "user_id"})
    assert s.ingest.segment_write_keys == (("a", "segment"), ("b", "rudderstack"), ("c", "segment"))
    assert s.ingest.segment_form_events == ("Webinar Registered", "Trial Started")
    assert s.ingest.snowplow_app_ids == ("site", "app")
    assert s.ingest.machine_networks == (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32"),
                                         ipaddress.ip_network("10.0.0.1/32"))
    assert s.alerts.digest_triggers == frozenset({"threshold", "account_intent"})


def test_default_tuples() -> None:
    s = Settings()
    assert s.worker.unique_identifiers == frozenset({"email"})
    assert s.ingest.segment_form_events == ("Form Submitted", "Signed Up", "Demo Requested")
    assert s.ingest.segment_write_keys == () and s.ingest.machine_networks == () and s.ingest.snowplow_app_ids == ()
    assert s.alerts.digest_triggers == frozenset()


@pytest.mark.parametrize(("name", "raw", "needle"), [
    ("LEADROUTER_MACHINE_NETWORKS", "10.0.0.0/8,office", "'office', which is not an address range"),
    ("LEADROUTER_DIGEST_TRIGGERS", "hand_raiser", "hand-raisers always go out at once"),
    ("LEADROUTER_DIGEST_TRIGGERS", "bogus", "unknown trigger(s) bogus"),
    ("LEADROUTER_UNIQUE_IDENTIFIERS", "phone", "must list email and/or user_id"),
    ("LEADROUTER_UNIQUE_IDENTIFIERS", "", "must list email and/or user_id"),
    ("LEADROUTER_SPOOL_FSYNC", "sometimes", "is not a policy; use one of always, interval, never"),
    ("LEADROUTER_SLACK_PACER", "cluster", "is not one of: redis, local"),
])
def test_bad_list_and_choice_values_name_the_variable(name: str, raw: str, needle: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({name: raw})
    assert name in str(exc.value) and needle in str(exc.value)


def test_redis_timeouts_default_to_todays_behaviour() -> None:
    r = Settings().redis
    assert (r.socket_timeout_s, r.connect_timeout_s) == (0.0, 0.0)
    assert r.collector_timeout_s == 0.5
    assert r.admin_timeout_s == 5.0
    assert r.admin_cli_timeout_s == 10.0


# --------------------------------------------------------------------------- every problem at once


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({
            "LEADROUTER_KAFKA_URI": "kafka://k:9092",
            "LEADROUTER_COLLECTOR_PORT": "eighty",
            "LEADROUTER_TOPIC_PARTITIONS": "0",
            "LEADROUTER_UNIQUE_IDENTIFIERS": "phone",
            "REDIS_URL": "localhost:6379",
            "LEADROUTER_SPOOL_FSYNC": "sometimes",
        })
    msg = str(exc.value)
    assert msg.startswith("6 settings problems:")
    for needle in ("unknown setting LEADROUTER_KAFKA_URI; did you mean LEADROUTER_KAFKA_URL?",
                   "LEADROUTER_COLLECTOR_PORT='eighty' is not a valid int",
                   "LEADROUTER_TOPIC_PARTITIONS=0 must be at least 1",
                   "LEADROUTER_UNIQUE_IDENTIFIERS='phone' must list email and/or user_id",
                   "REDIS_URL='localhost:6379' must start with redis://",
                   "LEADROUTER_SPOOL_FSYNC='sometimes' is not a policy"):
        assert needle in msg
    assert len(msg.splitlines()) == 7


def test_a_value_that_fails_to_parse_is_reported_once() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({"LEADROUTER_ALERT_MAX_ATTEMPTS": "many"})
    assert str(exc.value) == "setting LEADROUTER_ALERT_MAX_ATTEMPTS='many' is not a valid int; set a number such as 10"


def test_admin_limits_are_checked_when_loaded() -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({"LEADROUTER_ADMIN_PORT": "70000", "LEADROUTER_ADMIN_SIMULATE_MAX_LEADS": "0",
                       "LEADROUTER_ADMIN_MAX_BODY_BYTES": "10"})
    msg = str(exc.value)
    assert "LEADROUTER_ADMIN_PORT=70000 is not a TCP port" in msg
    assert "LEADROUTER_ADMIN_SIMULATE_MAX_LEADS must be at least 1" in msg
    assert "LEADROUTER_ADMIN_MAX_BODY_BYTES" in msg


# --------------------------------------------------------------------------- of / with_


def test_of_takes_flat_names_with_typed_values_or_strings() -> None:
    typed = Settings.of(collector_port=9000, cookie_secure=True, machine_networks=("192.0.2.0/24",),
                        unique_identifiers={"email", "user_id"}, alert_backoff_s=2)
    text = Settings.of(collector_port="9000", cookie_secure="yes", machine_networks="192.0.2.0/24",
                       unique_identifiers="email,user_id", alert_backoff_s="2")
    assert typed == text
    assert typed.ingest.collector_port == 9000
    assert typed.alerts.backoff_s == 2.0 and type(typed.alerts.backoff_s) is float
    assert typed.explicit == frozenset()


def test_of_and_with_validate_every_change() -> None:
    with pytest.raises(SettingsError) as exc:
        Settings.of(collector_port="eighty", spool_fsync="sometimes", topic_partitions=0)
    assert str(exc.value).startswith("3 settings problems:")
    with pytest.raises(SettingsError, match=r"unknown setting 'colector_port'; did you mean collector_port\?"):
        Settings().with_(colector_port=1)


def test_with_returns_a_changed_copy() -> None:
    s = Settings()
    t = s.with_(collector_port=1234, redis_url="redis://r:1/0", admin_port=0)
    assert t.ingest.collector_port == 1234 and t.redis.url == "redis://r:1/0" and t.admin.port == 0
    assert s.ingest.collector_port == 8080
    assert t.kafka is s.kafka  # untouched sections are shared


# --------------------------------------------------------------------------- token secret


def test_require_token_secret_returns_a_long_secret() -> None:
    secret = "x" * 16
    assert require_token_secret(load_settings({"LEADROUTER_TOKEN_SECRET": secret})) == secret


@pytest.mark.parametrize("secret", ["", "short", "x" * 15])
def test_require_token_secret_refuses_missing_or_short(secret: str) -> None:
    with pytest.raises(SettingsError) as exc:
        require_token_secret(Settings.of(token_secret=secret))
    msg = str(exc.value)
    assert "LEADROUTER_TOKEN_SECRET" in msg
    assert "16 characters" in msg
    assert "secrets.token_urlsafe" in msg


# --------------------------------------------------------------------------- the Redis factory


@pytest.mark.parametrize(("role", "socket", "connect"), [
    ("worker", None, None),
    ("cli", None, None),
    ("collector", 0.5, 0.5),
    ("admin", 5.0, 5.0),
    ("startup", 5.0, 5.0),
    ("admin_cli", 10.0, 5.0),
])
def test_redis_clients_keep_todays_timeouts_per_role(role: RedisRole, socket: float | None,
                                                     connect: float | None) -> None:
    section = Settings.of(redis_url="redis://r.example:6380/2").redis
    assert timeouts(section, role) == (socket, connect)
    for client in (create_redis(section, role=role), create_sync_redis(section, role=role)):
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("r.example", 6380, 2)
        assert (kwargs.get("socket_timeout"), kwargs.get("socket_connect_timeout")) == (socket, connect)


def test_redis_timeouts_come_from_the_settings() -> None:
    section = load_settings({"LEADROUTER_REDIS_SOCKET_TIMEOUT_S": "3", "LEADROUTER_REDIS_CONNECT_TIMEOUT_S": "1",
                             "LEADROUTER_REDIS_COLLECTOR_TIMEOUT_S": "0.2"}).redis
    assert timeouts(section, "worker") == (3.0, 1.0)
    assert timeouts(section, "collector") == (0.2, 0.2)


# --------------------------------------------------------------------------- expiry (issue 11.5)


def test_expiry_defaults_and_flat_names() -> None:
    from router.settings import DEDUPE_WINDOW_DAYS
    from router.storage import keys

    w = Settings().worker
    assert (w.anonymous_ttl_days, w.known_link_ttl_days) == (90.0, 395.0)
    assert (w.anonymous_ttl_s, w.known_link_ttl_s) == (keys.ANONYMOUS_TTL_S, keys.KNOWN_LINK_TTL_S)
    assert DEDUPE_WINDOW_DAYS * 86400 == keys.SEEN_WINDOW_S
    assert FIELDS["anonymous_ttl_days"] == ("worker", "anonymous_ttl_days")
    s = load_settings({"LEADROUTER_ANONYMOUS_TTL_DAYS": "30.5", "LEADROUTER_KNOWN_LINK_TTL_DAYS": "0"})
    assert s.worker.anonymous_ttl_s == round(30.5 * 86400) and s.worker.known_link_ttl_s == 0


@pytest.mark.parametrize(("name", "raw"), [
    ("LEADROUTER_ANONYMOUS_TTL_DAYS", "6.9"),
    ("LEADROUTER_ANONYMOUS_TTL_DAYS", "0.5"),
    ("LEADROUTER_KNOWN_LINK_TTL_DAYS", "1"),
    ("LEADROUTER_ANONYMOUS_TTL_DAYS", "1e9"),
])
def test_expiry_shorter_than_the_dedupe_window_is_refused(name: str, raw: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({name: raw})
    assert name in str(exc.value) and "de-duplication window" in str(exc.value)


def test_expiry_typed_values_are_checked_too() -> None:
    with pytest.raises(SettingsError, match="LEADROUTER_ANONYMOUS_TTL_DAYS"):
        Settings.of(anonymous_ttl_days=float("nan"))
    assert Settings.of(anonymous_ttl_days=7).worker.anonymous_ttl_s == 7 * 86400
    assert Settings.of(anonymous_ttl_days=0).worker.anonymous_ttl_s == 0


def test_smtp_pool_idle_setting() -> None:
    assert load_settings({}).alerts.smtp_pool_idle_s == 30.0
    assert FIELDS["smtp_pool_idle_s"] == ("alerts", "smtp_pool_idle_s")
    assert load_settings({"LEADROUTER_SMTP_POOL_IDLE_S": "0"}).alerts.smtp_pool_idle_s == 0.0
    assert load_settings({"LEADROUTER_SMTP_POOL_IDLE_S": "120"}).alerts.smtp_pool_idle_s == 120.0
    with pytest.raises(SettingsError) as exc:
        load_settings({"LEADROUTER_SMTP_POOL_IDLE_S": "7200"})
    assert "LEADROUTER_SMTP_POOL_IDLE_S=7200" in str(exc.value) and "e.g. 30" in str(exc.value)


# --------------------------------------------------------------------------- the worker's role (issue 15)


def test_worker_role_defaults_to_all_and_takes_each_role() -> None:
    assert Settings().worker.role == "all"
    for raw, role in (("all", "all"), ("scoring", "scoring"), ("alerts", "alerts"), (" Alerts ", "alerts")):
        assert load_settings({"LEADROUTER_WORKER_ROLE": raw}).worker.role == role
    assert Settings.of(worker_role="scoring").worker.role == "scoring"
    assert Settings.of(worker_role="alerts").to_env()["LEADROUTER_WORKER_ROLE"] == "alerts"


@pytest.mark.parametrize("raw", ["alert", "score", "both", "", "scoring,alerts"])
def test_an_unknown_worker_role_names_the_variable_the_value_and_the_roles(raw: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({"LEADROUTER_WORKER_ROLE": raw})
    assert str(exc.value) == f"setting LEADROUTER_WORKER_ROLE={raw!r} is not one of: all, scoring, alerts"
    with pytest.raises(SettingsError, match="LEADROUTER_WORKER_ROLE='alert' is not one of: all, scoring, alerts"):
        Settings.of(worker_role="alert")
