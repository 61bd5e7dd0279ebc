"""The deployment files in deploy/ agree with the code.

Docker and a cluster are not available to the tests, so every file is parsed and
checked against the source of truth it depends on: environment variable names
and defaults against :class:`router.settings.Settings`, topics against
:func:`router.storage.kafka.ensure_topics`, metric names against
``router.metrics.REGISTRY``, commands against ``router.cli.main.build_parser()``, and
the files against each other (ports, service names, labels, mounts, image name).
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import threading
import tomllib
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import yaml

import router.storage.kafka
import router.storage.live_config
from router import metrics
from router.cli.main import build_parser
from router.errors import SettingsError
from router.settings import (
    _ALIASES,
    FIELDS,
    PACKAGE_ROOT,
    Settings,
    env_name,
    load_settings,
    require_token_secret,
)

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
IMAGE = "leadrouter:latest"
NAMESPACE = "leadrouter"
# Packaged (pyproject include) but dev-only: the benchmarks, which need the `local` extra.
NOT_IN_IMAGE = frozenset({"bench"})
DEFAULTS = Settings()

SETTING_ENV_NAMES = frozenset({env_name(flat) for flat in FIELDS} | set(_ALIASES))
ROLES = ("collector", "worker", "admin")
# The ops-edited files (LEADROUTER_SCORING_FILE, _RULES_FILE, ...): every Path setting
# named *_file, each validated by router.storage.live_config.load_<setting>.
FILE_SETTINGS = tuple(flat for flat in FIELDS
                      if flat.endswith("_file") and isinstance(DEFAULTS.value(flat), Path))


def load_config_file(setting: str, path: Path) -> object:
    loader = getattr(router.storage.live_config, f"load_{setting}", None)
    assert loader is not None, f"router.storage.live_config has no load_{setting} to validate LEADROUTER_{setting.upper()}"
    return loader(path)


# --------------------------------------------------------------------------- helpers
def load_docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def load_one(path: Path) -> Any:
    docs = load_docs(path)
    assert len(docs) == 1, f"{path} should hold one YAML document, not {len(docs)}"
    return docs[0]


def env_problems(names: Any, where: str) -> list[str]:
    """Names that look like our settings (LEADROUTER_* or an alias) but are not one."""
    problems = []
    for name in names:
        if name.startswith("LEADROUTER_") and name not in SETTING_ENV_NAMES:
            problems.append(f"{where}: {name} is not a setting in router/settings.py")
    return problems


def parse_env_file(path: Path, *, commented: bool = False) -> dict[str, str]:
    """KEY=VALUE lines; with ``commented`` also the ``# KEY=VALUE`` examples."""
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
            if commented and m:
                out[m.group(1)] = m.group(2)
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: line {raw!r} is not KEY=VALUE"
        out[key.strip()] = value
    return out


def quantity_bytes(q: str | int) -> int:
    if isinstance(q, int):
        return q
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "k": 1000, "M": 1000**2, "G": 1000**3}
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", q)
    assert m, f"bad quantity {q!r}"
    return int(m.group(1)) * units.get(m.group(2), 1)


def expected_topics(settings: Settings) -> dict[str, int]:
    """The topics and partitions ensure_topics creates, found by running it against a fake admin."""
    created: dict[str, int] = {}

    class FakeAdmin:
        def __init__(self, **kwargs: Any) -> None:
            pass

        async def start(self) -> None:
            pass

        async def list_topics(self) -> list[str]:
            return []

        async def create_topics(self, topics: list[Any]) -> None:
            for t in topics:
                created[t.name] = t.num_partitions

        async def close(self) -> None:
            pass

    mp = pytest.MonkeyPatch()
    mp.setattr(router.storage.kafka, "AIOKafkaAdminClient", FakeAdmin)
    try:
        asyncio.run(router.storage.kafka.ensure_topics(settings.kafka, timeout_s=1.0))
    finally:
        mp.undo()
    return created


def cli_subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        if action.choices and isinstance(action.choices, dict):
            return set(action.choices)
    raise AssertionError("build_parser() has no subcommands")


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- Dockerfile
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return out


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile():
        if word == "ENV":
            for item in shlex.split(rest):
                key, sep, value = item.partition("=")
                assert sep, f"use ENV KEY=VALUE, not {rest!r}"
                env[key] = value
    return env


def docker_settings_env() -> dict[str, str]:
    return {k: v for k, v in docker_env().items() if k.startswith("LEADROUTER_") or k in _ALIASES}


def dockerfile_uid() -> int:
    text = " ".join(rest for word, rest in dockerfile() if word == "RUN")
    m = re.search(r"useradd\b[^&;]*--uid[ =](\d+)", text)
    assert m, "the Dockerfile creates no user with a fixed --uid"
    return int(m.group(1))


def test_dockerfile_base_entrypoint_and_non_root_user() -> None:
    instr = dockerfile()
    froms = [rest.split()[0] for word, rest in instr if word == "FROM"]
    assert froms and all(f == "python:3.11-slim" for f in froms), froms
    entry = [rest for word, rest in instr if word == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["leadrouter"]
    users = [rest for word, rest in instr if word == "USER"]
    assert users, "the image must not run as root: add a USER"
    # The last USER wins, and nothing after the final FROM switches back.
    last_from = max(i for i, (word, _) in enumerate(instr) if word == "FROM")
    final_users = [rest for i, (word, rest) in enumerate(instr) if word == "USER" and i > last_from]
    assert final_users, "the runtime stage sets no USER"
    user = final_users[-1].split(":")[0]
    assert user not in {"0", "root"}
    assert user.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"
    assert int(user) == dockerfile_uid() != 0
    assert any(word == "RUN" and re.search(r"pip install( --\S+)* \.(\s|$)", rest + " ") for word, rest in instr), \
        "the project is installed with `pip install .`"


def test_dockerfile_copies_the_project_and_the_ignore_file_lets_it_in() -> None:
    instr = dockerfile()
    copies = []
    for word, rest in instr:
        if word == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            if "--from=" in rest:
                continue
            copies.extend(parts[:-1])
    assert copies
    for src in copies:
        assert (REPO / src).exists(), f"COPY {src}: no such file in the build context (the repository root)"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted(p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()
                      and any(fnmatch.fnmatch(p.name, pat) for pat in patterns))
    assert {"router", "scoring", "rules", "models"} <= set(packages)
    # The benchmarks are packaged for the editable install (`leadrouter bench`) but are not
    # part of the service: the image leaves them out, like the `local` extra they need.
    packages = [p for p in packages if p not in NOT_IN_IMAGE]
    copied = {PurePosixPath(c).as_posix().rstrip("/") for c in copies}
    missing = [p for p in packages if p not in copied]
    assert not missing, f"packages pip install . needs but the Dockerfile does not COPY: {missing}"
    assert not NOT_IN_IMAGE & copied, f"dev-only packages copied into the image: {NOT_IN_IMAGE & copied}"
    assert "pyproject.toml" in copied and pyproject["project"]["readme"] in copied

    rules = []
    for raw in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            neg = line.startswith("!")
            rules.append((neg, line.lstrip("!").rstrip("/")))

    def ignored(rel: str) -> bool:
        parts = PurePosixPath(rel).parts
        result = False
        for neg, pat in rules:
            for i in range(1, len(parts) + 1):
                prefix = "/".join(parts[:i])
                if fnmatch.fnmatch(prefix, pat) or (pat.startswith("**/") and fnmatch.fnmatch(parts[i - 1], pat[3:])):
                    result = not neg
                    break
        return result

    for src in copies:
        path = REPO / src
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            rel = f.relative_to(REPO).as_posix()
            if "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            assert not ignored(rel), f"{rel} is copied by the Dockerfile but excluded by Dockerfile.dockerignore"
    assert ignored(".venv/bin/python") and ignored("tests/conftest.py") and ignored("bench/full_path.py")


def test_dockerfile_env_ports_and_volume_agree_with_settings() -> None:
    env = docker_env()
    assert not env_problems(env, "Dockerfile ENV")
    s = load_settings(docker_settings_env())
    assert s.ingest.collector_host == "0.0.0.0", "inside a container the collector must listen on every interface"
    assert s.ingest.collector_metrics_host == "0.0.0.0", "Prometheus must reach the metrics listener in a container"
    instr = dockerfile()
    exposed = {int(p.split("/")[0]) for word, rest in instr if word == "EXPOSE" for p in rest.split()}
    assert exposed == {s.ingest.collector_port, s.ingest.collector_metrics_port, s.worker.web_port, s.admin.port}
    assert s.admin.host == "0.0.0.0", "inside a container the admin service must listen on every interface"
    volumes = [json.loads(rest) for word, rest in instr if word == "VOLUME"]
    assert [str(s.spool.dir)] in volumes
    run = " ".join(rest for word, rest in instr if word == "RUN")
    assert f"mkdir -p {s.spool.dir}" in run, "create the spool dir so a new volume inherits the user's ownership"
    workdir = [rest for word, rest in instr if word == "WORKDIR"][-1]
    assert f"chown -R leadrouter:leadrouter {workdir}" in run, "the working directory must be writable (faust data)"
    assert str(s.spool.dir).startswith(workdir + "/")


def test_dockerfile_healthcheck_runs_the_copied_script() -> None:
    instr = dockerfile()
    dest = [shlex.split(rest)[-1] for word, rest in instr if word == "COPY" and "deploy/healthcheck.py" in rest]
    assert dest == ["/usr/local/bin/leadrouter-healthcheck"]
    hc = [rest for word, rest in instr if word == "HEALTHCHECK"]
    assert len(hc) == 1
    cmd = json.loads(hc[0].split("CMD", 1)[1])
    assert dest[0] in cmd


# --------------------------------------------------------------------------- healthcheck script
@pytest.fixture
def healthcheck() -> ModuleType:
    return load_module(DEPLOY / "healthcheck.py", "leadrouter_deploy_healthcheck")


class _Health:
    def __init__(self, body: bytes, status: int = 200) -> None:
        body_, status_ = body, status

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = status_ if self.path == "/healthz" else 404
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body_)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def health_server() -> Iterator[Any]:
    servers: list[_Health] = []

    def start(body: bytes = b'{"ok": true}', status: int = 200) -> _Health:
        servers.append(_Health(body, status))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_healthcheck_script_answers_for_the_role_asked(healthcheck: ModuleType, health_server: Any) -> None:
    up = health_server()
    env = {"LEADROUTER_COLLECTOR_PORT": str(up.port), "LEADROUTER_WORKER_WEB_PORT": "1"}
    assert healthcheck.main(["collector"], env, timeout_s=2) == 0
    assert healthcheck.main([], env, timeout_s=2) == 0  # any
    assert healthcheck.main(["worker"], env, timeout_s=2) == 1
    env = {"LEADROUTER_WORKER_WEB_PORT": str(up.port), "LEADROUTER_COLLECTOR_PORT": "1"}
    assert healthcheck.main(["worker"], env, timeout_s=2) == 0
    assert healthcheck.main(["collector"], env, timeout_s=2) == 1
    assert healthcheck.main(["admin"], env, timeout_s=2) == 1
    env = {"LEADROUTER_ADMIN_PORT": str(up.port), "LEADROUTER_COLLECTOR_PORT": "1", "LEADROUTER_WORKER_WEB_PORT": "1"}
    assert healthcheck.main(["admin"], env, timeout_s=2) == 0
    assert healthcheck.main([], env, timeout_s=2) == 0  # any
    assert healthcheck.main(["worker"], env, timeout_s=2) == 1
    assert healthcheck.main(["nonsense"], env) == 2


def test_healthcheck_script_wants_ok_true(healthcheck: ModuleType, health_server: Any) -> None:
    not_ok = health_server(b'{"ok": false}')
    error = health_server(b'{"ok": true}', status=500)
    for server in (not_ok, error):
        assert healthcheck.main(["collector"], {"LEADROUTER_COLLECTOR_PORT": str(server.port)}, timeout_s=2) == 1
    # Default ports when nothing is set: the Settings defaults.
    assert healthcheck.targets("any", {}) == [
        f"http://127.0.0.1:{DEFAULTS.ingest.collector_port}/healthz", f"http://127.0.0.1:{DEFAULTS.worker.web_port}/healthz",
        f"http://127.0.0.1:{DEFAULTS.admin.port}/healthz"]


# --------------------------------------------------------------------------- compose
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = load_one(DEPLOY / "compose.yaml")
    assert isinstance(doc.get("services"), dict)
    return doc


def leadrouter_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if str(s.get("image", "")).startswith("leadrouter")}


def compose_environment(svc: Mapping[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def compose_env_files(svc: Mapping[str, Any]) -> list[tuple[Path, bool]]:
    out = []
    for entry in svc.get("env_file") or []:
        if isinstance(entry, str):
            out.append((DEPLOY / entry, True))
        else:
            out.append((DEPLOY / entry["path"], bool(entry.get("required", True))))
    return out


def compose_service_env(svc: Mapping[str, Any]) -> dict[str, str]:
    """What the process sees: image ENV, then the required env files, then `environment`."""
    env = docker_settings_env()
    for path, required in compose_env_files(svc):
        if required:
            env.update(parse_env_file(path))
    env.update(compose_environment(svc))
    return env


def role(svc: Mapping[str, Any]) -> str:
    cmd = svc.get("command")
    cmd = shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])
    assert cmd, "a leadrouter service names its subcommand"
    return cmd[0]


def port_mappings(svc: Mapping[str, Any]) -> list[tuple[int | None, int]]:
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.append((int(p["published"]) if p.get("published") else None, int(p["target"])))
            continue
        parts = str(p).split("/")[0].split(":")
        out.append((int(parts[-2]) if len(parts) >= 2 else None, int(parts[-1])))
    return out


def compose_listen_port(compose: Mapping[str, Any], name: str) -> set[int]:
    """The ports a compose service listens on inside the network."""
    svc = compose["services"][name]
    if str(svc.get("image", "")).startswith("leadrouter"):
        s = load_settings(compose_service_env(svc))
        if role(svc) == "collector":
            return {s.ingest.collector_port, s.ingest.collector_metrics_port}
        if role(svc) == "admin":
            return {s.admin.port}
        return {s.worker.web_port}
    image = str(svc.get("image", ""))
    if image.startswith("prom/prometheus"):
        for arg in svc.get("command") or []:
            if arg.startswith("--web.listen-address="):
                return {int(arg.rsplit(":", 1)[1])}
        return {9090}
    if image.startswith("grafana/grafana"):
        return {int(compose_environment(svc).get("GF_SERVER_HTTP_PORT", 3000))}
    if image.startswith("redis"):
        return {6379}
    if image.startswith("apache/kafka"):
        listeners = compose_environment(svc)["KAFKA_LISTENERS"]
        return {int(x.rsplit(":", 1)[1]) for x in listeners.split(",")}
    if image.startswith("axllent/mailpit"):
        return {1025, 8025}
    raise AssertionError(f"test does not know the ports of compose service {name} ({image})")


def test_compose_uses_one_image_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    lr = leadrouter_services(compose)
    assert set(lr) >= {"collector-1", "collector-2", "worker", "admin"}
    for name, svc in lr.items():
        assert svc["image"] == IMAGE, name
        build = svc["build"]
        assert (DEPLOY / build["context"]).resolve() == REPO
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    # Nothing else claims a leadrouter image under another name.
    for name, svc in compose["services"].items():
        if "leadrouter" in str(svc.get("image", "")):
            assert svc["image"] == IMAGE, name


def test_compose_commands_are_real_subcommands(compose: dict[str, Any]) -> None:
    subcommands = cli_subcommands()
    assert {"collector", "worker"} <= subcommands
    roles = {}
    for name, svc in leadrouter_services(compose).items():
        cmd = svc["command"]
        assert cmd[0] in subcommands, f"{name}: {cmd[0]!r} is not a leadrouter subcommand"
        args = build_parser().parse_args(cmd)
        roles[name] = args.command
    assert sorted(roles.values()).count("collector") == 2, roles
    assert "worker" in roles.values()
    assert list(roles.values()).count("admin") == 1, roles


def test_compose_env_names_are_settings_and_load(compose: dict[str, Any]) -> None:
    problems: list[str] = []
    for name, svc in leadrouter_services(compose).items():
        names = set(compose_environment(svc))
        files = compose_env_files(svc)
        assert any(p.name == "leadrouter.env.example" and req for p, req in files), name
        for path, required in files:
            if required:
                assert path.is_file(), f"{name}: required env_file {path} is missing"
                names |= set(parse_env_file(path, commented=True))
        problems += env_problems(names, f"compose service {name}")
        s = load_settings(compose_service_env(svc))  # raises on a bad name or value
        if role(svc) in {"collector", "admin"}:
            require_token_secret(s)
    for name, value in compose.items():
        if name.startswith("x-") and isinstance(value, dict) and all(isinstance(k, str) for k in value):
            problems += env_problems(value, f"compose {name}")
    assert not problems, "\n".join(problems)


def test_env_checker_catches_a_misspelt_setting() -> None:
    assert env_problems(["LEADROUTER_WORKER_WEB_PROT", "LEADROUTER_WORKER_WEB_PORT", "KAFKA_URL"], "x") == [
        "x: LEADROUTER_WORKER_WEB_PROT is not a setting in router/settings.py"]
    with pytest.raises(SettingsError):
        load_settings({"LEADROUTER_WORKER_WEB_PROT": "1"})


def test_compose_ports_match_settings(compose: dict[str, Any]) -> None:
    host_ports: list[int] = []
    for name, svc in compose["services"].items():
        for host, container in port_mappings(svc):
            if host is not None:
                host_ports.append(host)
            assert container in compose_listen_port(compose, name), \
                f"{name} publishes container port {container}, which nothing listens on"
    assert len(host_ports) == len(set(host_ports)), f"host ports used twice: {host_ports}"
    collectors = {n: s for n, s in leadrouter_services(compose).items() if role(s) == "collector"}
    published = {n: [h for h, _ in port_mappings(s)] for n, s in collectors.items()}
    assert published == {"collector-1": [8081], "collector-2": [8082]}
    for name, svc in collectors.items():
        s = load_settings(compose_service_env(svc))
        assert s.ingest.collector_host == "0.0.0.0"
        assert s.ingest.public_url == f"http://localhost:{published[name][0]}", name
    for name, svc in leadrouter_services(compose).items():
        test = svc["healthcheck"]["test"]
        assert "/usr/local/bin/leadrouter-healthcheck" in test and test[-1] == role(svc), name


def test_compose_admin_service_serves_the_alert_links_the_workers_sign(compose: dict[str, Any]) -> None:
    """Alert links lead somewhere: the admin service is published at LEADROUTER_ADMIN_URL and shares the link key."""
    services = leadrouter_services(compose)
    (admin_name,) = [n for n, svc in services.items() if role(svc) == "admin"]
    admin = services[admin_name]
    seen = {name: load_settings(compose_service_env(svc)) for name, svc in services.items()}
    urls = {s.alerts.admin_url for s in seen.values()}
    assert len(urls) == 1 and "" not in urls, f"every service needs the same LEADROUTER_ADMIN_URL: {urls}"
    (url,) = urls
    m = re.fullmatch(r"http://localhost:(\d+)", url)
    assert m, f"LEADROUTER_ADMIN_URL {url!r}: the compose stack serves the admin service on localhost"
    mine = seen[admin_name]
    assert (int(m.group(1)), mine.admin.port) in port_mappings(admin), \
        f"LEADROUTER_ADMIN_URL {url} is not where {admin_name} (port {mine.admin.port}) is published"
    assert mine.admin.host == "0.0.0.0"
    secrets = {require_token_secret(s) for s in seen.values()}
    assert len(secrets) == 1, "the workers sign alert links with the key the admin service verifies them with"
    # The admin service needs Redis only; it must not wait on Kafka's topics.
    assert set(admin["depends_on"]) == {"redis"}
    assert admin["healthcheck"]["test"][-1] == "admin"


def test_compose_kafka_is_kraft_and_matches_kafka_url(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == "apache/kafka:3.8.0"
    env = compose_environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    controller_port = listeners[controller].rsplit(":", 1)[1]
    assert f"{node}@kafka:{controller_port}" in voters
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "CLUSTER_ID must be a base64 UUID"
    advertised = {item.split("://", 1)[1] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    volume_targets = [v.split(":")[1] for v in kafka["volumes"]]
    assert env["KAFKA_LOG_DIRS"] in volume_targets, "Kafka's data must be on a volume"
    partitions = set()
    for name, svc in leadrouter_services(compose).items():
        s = load_settings(compose_service_env(svc))
        for server in s.kafka.bootstrap.split(","):
            assert server in advertised, f"{name}: KAFKA_URL {s.kafka.url} is not an advertised listener"
        partitions.add(s.kafka.topic_partitions)
    assert partitions == {int(env["KAFKA_NUM_PARTITIONS"])}
    assert compose["services"]["kafka"]["healthcheck"]["test"]


def test_compose_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    cmd = redis["command"]
    cmd = shlex.split(cmd) if isinstance(cmd, str) else cmd
    assert cmd[0] == "redis-server"
    pairs = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert pairs["--appendonly"] == "yes" and pairs["--appendfsync"] == "everysec"
    assert any(v.split(":")[1] == "/data" and v.split(":")[0] in compose["volumes"] for v in redis["volumes"])
    for name, svc in leadrouter_services(compose).items():
        url = load_settings(compose_service_env(svc)).redis.url
        m = re.fullmatch(r"redis://([^:/]+):(\d+)/\d+", url)
        assert m, f"{name}: REDIS_URL {url}"
        assert m.group(1) == "redis" and int(m.group(2)) in compose_listen_port(compose, "redis")


def topic_commands(text: str) -> dict[str, int]:
    found = {}
    for line in text.splitlines():
        if "--create" in line:
            topic = re.search(r"--topic\s+(\S+)", line)
            parts = re.search(r"--partitions\s+(\d+)", line)
            assert topic and parts, line
            assert "--if-not-exists" in line, "topic creation must be idempotent"
            found[topic.group(1)] = int(parts.group(1))
    return found


def test_compose_topic_job_matches_ensure_topics(compose: dict[str, Any]) -> None:
    svc = compose["services"]["topics"]
    text = "\n".join(svc["command"]) if isinstance(svc["command"], list) else svc["command"]
    found = topic_commands(text)
    settings = {load_settings(compose_service_env(s)) for s in leadrouter_services(compose).values()}
    wanted = [expected_topics(s) for s in settings]
    assert all(w == wanted[0] for w in wanted)
    assert found == wanted[0]
    assert found == {"leadrouter.events": 4, "leadrouter.assignments": 4, "leadrouter.alerts.dlq": 1}
    assert "--bootstrap-server kafka:9092" in text
    for name, s in leadrouter_services(compose).items():
        if role(s) == "admin":  # Redis only: it neither produces nor consumes
            assert "topics" not in s["depends_on"] and "kafka" not in s["depends_on"], name
            continue
        assert s["depends_on"]["topics"]["condition"] == "service_completed_successfully", name


def test_compose_workers_do_not_outnumber_partitions(compose: dict[str, Any]) -> None:
    workers = {n: s for n, s in leadrouter_services(compose).items() if role(s) == "worker"}
    count = sum(int((s.get("deploy") or {}).get("replicas", 1)) for s in workers.values())
    assert count >= 2
    for svc in workers.values():
        assert count <= load_settings(compose_service_env(svc)).kafka.topic_partitions


def test_compose_references_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    named_volumes = set(compose.get("volumes") or {})
    for name, svc in services.items():
        deps = svc.get("depends_on") or []
        for dep in deps:  # a list, or a mapping of service -> condition
            assert dep in services, f"{name} depends on unknown service {dep}"
        for vol in svc.get("volumes") or []:
            src, target = vol.split(":")[:2]
            if src.startswith((".", "/")):
                assert (DEPLOY / src).exists(), f"{name}: bind mount source {src} does not exist"
            else:
                assert src in named_volumes, f"{name}: volume {src} is not declared"
            assert target.startswith("/")


def compose_mounts(svc: Mapping[str, Any]) -> dict[str, str]:
    """container path -> source (relative to deploy/ for binds, or a volume name)."""
    return {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes") or []}


def host_path_for(svc: Mapping[str, Any], container_path: Path) -> Path | None:
    for target, src in compose_mounts(svc).items():
        if src.startswith((".", "/")) and container_path.is_relative_to(target):
            return (DEPLOY / src / container_path.relative_to(target)).resolve()
    return None


def test_compose_config_files_are_mounted_and_valid(compose: dict[str, Any]) -> None:
    assert {"scoring_file", "rules_file"} <= set(FILE_SETTINGS)
    for name, svc in leadrouter_services(compose).items():
        s = load_settings(compose_service_env(svc))
        for setting in FILE_SETTINGS:
            # The container sees the repository's own file (the packaged default).
            repo_file = REPO / DEFAULTS.value(setting).relative_to(PACKAGE_ROOT)
            assert host_path_for(svc, s.value(setting)) == repo_file, f"{name}: {setting}"
            load_config_file(setting, repo_file)
        assert all(v.endswith(":ro") for v in svc["volumes"] if v.startswith(".")), name


def test_compose_each_collector_has_its_own_spool_volume(compose: dict[str, Any]) -> None:
    seen = []
    for name, svc in leadrouter_services(compose).items():
        if role(svc) != "collector":
            continue
        s = load_settings(compose_service_env(svc))
        src = compose_mounts(svc).get(str(s.spool.dir))
        assert src and src in compose["volumes"], f"{name}: no named volume at the spool {s.spool.dir}"
        seen.append(src)
    assert len(seen) == 2 and len(set(seen)) == 2


def test_env_example_values_are_fake_and_gitignored() -> None:
    path = DEPLOY / "leadrouter.env.example"
    values = parse_env_file(path, commented=True)
    assert not env_problems(values, str(path))
    assert {"LEADROUTER_TOKEN_SECRET", "SLACK_BOT_TOKEN", "LEADROUTER_SMTP_PASSWORD"} <= set(values)
    for key, value in values.items():
        secretish = any(w in key for w in ("SECRET", "TOKEN", "PASSWORD", "WEBHOOK"))
        if secretish or value.startswith(("xox", "https://hooks.slack.com")):
            assert re.search(r"fake|example", value, re.I), f"{key}={value} looks real; example values must be fake"
    require_token_secret(load_settings(parse_env_file(path)))
    ignored = (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    assert "leadrouter.env" in ignored and "k8s/secret.yaml" in ignored


# --------------------------------------------------------------------------- Prometheus
def test_prometheus_scrapes_every_collector_and_worker(compose: dict[str, Any]) -> None:
    prom = load_one(DEPLOY / "prometheus.yml")
    assert any(v.startswith("./prometheus.yml:/etc/prometheus/prometheus.yml")
               for v in compose["services"]["prometheus"]["volumes"])
    scraped: dict[str, set[int]] = {}
    for job in prom["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host, port = target.rsplit(":", 1)
                if host == "localhost":
                    assert job["job_name"] == "prometheus"
                    host = "prometheus"
                assert host in compose["services"], f"{job['job_name']}: no compose service {host}"
                scraped.setdefault(host, set()).add(int(port))
        for sd in job.get("dns_sd_configs", []):
            assert sd.get("type", "SRV") == "A" and "port" in sd
            for host in sd["names"]:
                assert host in compose["services"], f"{job['job_name']}: no compose service {host}"
                scraped.setdefault(host, set()).add(int(sd["port"]))
    for host, ports in scraped.items():
        assert ports <= compose_listen_port(compose, host), f"{host} is scraped on {ports}"
    assert set(leadrouter_services(compose)) <= set(scraped), "every collector, worker and admin service is scraped"
    # Issue 16.8: collectors are scraped on their private metrics listener, never the public port.
    assert scraped["collector-1"] == {DEFAULTS.ingest.collector_metrics_port}
    assert DEFAULTS.ingest.collector_port not in scraped["collector-1"]
    assert scraped["worker"] == {DEFAULTS.worker.web_port}


# --------------------------------------------------------------------------- Grafana
def metric_catalogue() -> dict[str, tuple[str, frozenset[str], str]]:
    """Every sample name the registry can expose -> (family, label names, type)."""
    labels: dict[str, tuple[str, ...]] = {}
    for collector in metrics.REGISTRY._collector_to_names:  # every metric registered in REGISTRY
        labels[collector._name] = tuple(collector._labelnames)  # type: ignore[attr-defined]
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",), "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
    out: dict[str, tuple[str, frozenset[str], str]] = {}
    families = list(metrics.REGISTRY.collect())
    assert {f.name for f in families} == set(labels)
    for fam in families:
        for suffix in suffixes[fam.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            out[fam.name + suffix] = (fam.name, frozenset(labels[fam.name]) | extra, fam.type)
    return out


TARGET_LABELS = frozenset({"instance", "job"})
OTHER_METRICS: dict[str, frozenset[str]] = {"up": frozenset()}


def expr_problems(expr: str, catalogue: Mapping[str, tuple[str, frozenset[str], str]]) -> list[str]:
    problems = []
    names = set(re.findall(r"\b(leadrouter_[a-z0-9_]+)\b", expr))
    other = {n for n in OTHER_METRICS if re.search(rf"\b{n}\s*(\{{|\[|\)|$)", expr)}
    if not names and not other:
        problems.append(f"{expr!r} queries no leadrouter metric")
    allowed = set(TARGET_LABELS)
    for n in names:
        if n not in catalogue:
            problems.append(f"{expr!r}: {n} is not exposed by router.metrics.REGISTRY")
        else:
            allowed |= catalogue[n][1]
    used = set()
    for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        used |= {x.strip() for x in clause.split(",") if x.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        used |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    problems += [f"{expr!r}: label {lab} is not a label of {sorted(names)}" for lab in sorted(used - allowed)]
    for a, b in ("()", "[]", "{}"):
        if expr.count(a) != expr.count(b):
            problems.append(f"{expr!r}: unbalanced {a}{b}")
    return problems


def dashboard_panels(dash: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_grafana_panels_query_only_declared_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "leadrouter.json").read_text(encoding="utf-8"))
    catalogue = metric_catalogue()
    assert "leadrouter_events_total" in catalogue and "leadrouter_collector_request_seconds_bucket" in catalogue
    problems: list[str] = []
    exprs: list[str] = []
    ids = []
    for panel in dashboard_panels(dash):
        ids.append(panel["id"])
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for t in panel["targets"]:
            exprs.append(t["expr"])
            problems += expr_problems(t["expr"], catalogue)
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert not problems, "\n".join(problems)
    used = {n for e in exprs for n in re.findall(r"\b(leadrouter_[a-z0-9_]+)\b", e)}
    required = {
        "leadrouter_events_total", "leadrouter_collector_requests_total",
        "leadrouter_collector_request_seconds_bucket", "leadrouter_event_to_alert_seconds_bucket",
        "leadrouter_crossings_total", "leadrouter_assignments_total", "leadrouter_alert_sends_total",
        "leadrouter_produce_failures_total", "leadrouter_config_reloads_total",
    }
    assert required <= used, f"the dashboard lacks {sorted(required - used)}"
    joined = "\n".join(exprs)
    assert re.search(r"histogram_quantile\(0\.99, sum by \(le, endpoint\) \(rate\(leadrouter_collector_request_seconds_bucket", joined)
    for q in ("0.5", "0.99"):
        assert re.search(rf"histogram_quantile\({q}, sum by \(le, channel\) \(rate\(leadrouter_event_to_alert_seconds_bucket", joined)
    assert "sum by (team)" in joined and 'outcome="failed"' in joined


def test_metric_checker_rejects_wrong_names_and_labels() -> None:
    catalogue = metric_catalogue()
    assert expr_problems("sum by (type) (rate(leadrouter_events_total[5m]))", catalogue) == []
    assert expr_problems("rate(leadrouter_events_count[5m])", catalogue)  # a counter has no _count
    assert expr_problems("sum by (team) (rate(leadrouter_events_total[5m]))", catalogue)  # no such label
    assert expr_problems("histogram_quantile(0.9, sum by (le) (rate(leadrouter_crossings_bucket[5m])))", catalogue)
    assert expr_problems("sum(rate(http_requests_total[5m]))", catalogue)


def test_grafana_provisioning_matches_compose(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {src.rstrip("/"): target for target, src in compose_mounts(grafana).items()}
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    ds_doc = load_one(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    (ds,) = ds_doc["datasources"]
    assert ds["type"] == "prometheus"
    m = re.fullmatch(r"http://([^:/]+):(\d+)/?", ds["url"])
    assert m and m.group(1) in compose["services"]
    assert int(m.group(2)) in compose_listen_port(compose, m.group(1))
    assert compose["services"][m.group(1)]["image"].startswith("prom/prometheus")
    prov = load_one(DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    home = compose_environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home == provider["options"]["path"] + "/leadrouter.json"
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "leadrouter.json").read_text(encoding="utf-8"))
    for panel in dashboard_panels(dash):
        for obj in [panel, *panel.get("targets", [])]:
            if "datasource" in obj:
                assert obj["datasource"] == {"type": "prometheus", "uid": ds["uid"]}, panel["title"]


# --------------------------------------------------------------------------- Kubernetes
def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    docs = []
    for path in k8s_files():
        for doc in load_docs(path):
            doc["__file__"] = path.name
            docs.append(doc)
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in {"Deployment", "StatefulSet", "Job"}]


def container_env(docs: list[dict[str, Any]], container: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            env.update(named(docs, "ConfigMap", src["configMapRef"]["name"])["data"])
        if "secretRef" in src:
            env.update(named(docs, "Secret", src["secretRef"]["name"])["stringData"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "configMapKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = named(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
    return env


def leadrouter_containers(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for d in workloads(docs):
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c["image"].startswith("leadrouter"):
                out.append((d, c))
    return out


def test_k8s_objects_have_identity_and_namespace(k8s: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in k8s}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "Job"} <= kinds
    seen = set()
    for d in k8s:
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), d["__file__"]
        key = (d["kind"], d["metadata"]["name"])
        assert key not in seen, f"{key} defined twice"
        seen.add(key)
        if d["kind"] == "Namespace":
            assert d["metadata"]["name"] == NAMESPACE
        else:
            assert d["metadata"].get("namespace") == NAMESPACE, key
    deployments = {d["metadata"]["name"] for d in of_kind(k8s, "Deployment")}
    assert deployments == {"leadrouter-collector", "leadrouter-worker", "leadrouter-admin"}


def test_k8s_selectors_match_pod_labels(k8s: list[dict[str, Any]]) -> None:
    for d in of_kind(k8s, "Deployment"):
        selector = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert selector and selector.items() <= labels.items(), d["metadata"]["name"]
    # Two Deployments must not select each other's pods.
    deps = of_kind(k8s, "Deployment")
    for a in deps:
        for b in deps:
            if a is not b:
                sel = a["spec"]["selector"]["matchLabels"]
                assert not sel.items() <= b["spec"]["template"]["metadata"]["labels"].items()


def pods_selected(k8s: list[dict[str, Any]], selector: Mapping[str, str]) -> list[dict[str, Any]]:
    return [d for d in of_kind(k8s, "Deployment") if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]


def test_k8s_services_select_pods_and_target_container_ports(k8s: list[dict[str, Any]]) -> None:
    services = of_kind(k8s, "Service")
    assert {s["metadata"]["name"] for s in services} == {"leadrouter-collector", "leadrouter-worker", "leadrouter-admin"}
    for svc in services:
        targets = pods_selected(k8s, svc["spec"]["selector"])
        assert len(targets) == 1, f"Service {svc['metadata']['name']} selects {len(targets)} Deployments"
        ports = [p for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
        for sp in svc["spec"]["ports"]:
            tp = sp.get("targetPort", sp["port"])
            assert any(tp in (p.get("name"), p["containerPort"]) for p in ports), \
                f"Service {svc['metadata']['name']} targets port {tp}, which no container exposes"


def test_k8s_env_names_are_settings_and_load(k8s: list[dict[str, Any]]) -> None:
    problems = []
    cm = named(k8s, "ConfigMap", "leadrouter-settings")
    secret = named(k8s, "Secret", "leadrouter-secrets")
    problems += env_problems(cm["data"], "ConfigMap leadrouter-settings")
    problems += env_problems(secret["stringData"], "Secret leadrouter-secrets")
    assert set(cm["data"]) | set(secret["stringData"]) <= SETTING_ENV_NAMES, \
        "the leadrouter ConfigMap and Secret hold settings only"
    for d, c in leadrouter_containers(k8s):
        env = container_env(k8s, c)
        problems += env_problems(env, f"{d['metadata']['name']}/{c['name']}")
        s = load_settings({**docker_settings_env(), **env})
        args = build_parser().parse_args(c["args"])
        assert args.command in ROLES
        if args.command in {"collector", "admin"}:
            require_token_secret(s)
    assert not problems, "\n".join(problems)
    assert {"KAFKA_URL", "REDIS_URL"} <= set(cm["data"]), "Kafka and Redis are external: set their URLs"


def test_k8s_admin_service_serves_the_alert_links_the_workers_sign(k8s: list[dict[str, Any]]) -> None:
    """Alert links lead somewhere: leadrouter-admin runs, is behind a Service, and verifies with the workers' key."""
    seen = {}
    for d, c in leadrouter_containers(k8s):
        env = container_env(k8s, c)
        seen[d["metadata"]["name"]] = (env, load_settings({**docker_settings_env(), **env}))
    env, admin = seen["leadrouter-admin"]
    urls = {s.alerts.admin_url for _, s in seen.values()}
    assert len(urls) == 1, f"every pod needs the same LEADROUTER_ADMIN_URL: {urls}"
    assert admin.alerts.admin_url.startswith("https://"), "the public admin URL (alert links, sign-in) must be https"
    secret = named(k8s, "Secret", "leadrouter-secrets")["stringData"]
    assert "LEADROUTER_TOKEN_SECRET" in secret
    assert "LEADROUTER_TOKEN_SECRET" not in named(k8s, "ConfigMap", "leadrouter-settings")["data"], \
        "the link key belongs in the Secret"
    assert env["LEADROUTER_TOKEN_SECRET"] == secret["LEADROUTER_TOKEN_SECRET"]
    assert {require_token_secret(s) for _, s in seen.values()} == {secret["LEADROUTER_TOKEN_SECRET"]}
    svc = named(k8s, "Service", "leadrouter-admin")
    (target,) = pods_selected(k8s, svc["spec"]["selector"])
    assert target["metadata"]["name"] == "leadrouter-admin"
    assert named(k8s, "Deployment", "leadrouter-admin")["spec"]["replicas"] >= 2


def probe_port(container: Mapping[str, Any], probe: Mapping[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    (p,) = [p for p in container["ports"] if p.get("name") == port]
    return int(p["containerPort"])


def test_k8s_ports_probes_and_annotations_match_settings(k8s: list[dict[str, Any]]) -> None:
    seen = set()
    for d, c in leadrouter_containers(k8s):
        s = load_settings({**docker_settings_env(), **container_env(k8s, c)})
        command = c["args"][0]
        seen.add(command)
        port = {"collector": s.ingest.collector_port, "admin": s.admin.port}.get(command, s.worker.web_port)
        metrics_port = s.ingest.collector_metrics_port if command == "collector" else port
        assert [p["containerPort"] for p in c["ports"]] == sorted({port, metrics_port}), d["metadata"]["name"]
        for kind in ("readinessProbe", "livenessProbe"):
            probe = c[kind]
            assert probe["httpGet"]["path"] == "/healthz"
            assert probe_port(c, probe) == port, f"{d['metadata']['name']} {kind}"
        ann = d["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/port"] == str(metrics_port) and ann["prometheus.io/path"] == "/metrics"
        assert c["resources"]["requests"] and c["resources"]["limits"]
        if command == "collector":
            assert s.ingest.collector_host == "0.0.0.0" and s.ingest.collector_metrics_host == "0.0.0.0"
            assert metrics_port != port, "collector metrics must not be on the public port"
        if command == "admin":
            assert s.admin.host == "0.0.0.0"
    assert seen == set(ROLES)
    collector = named(k8s, "Deployment", "leadrouter-collector")
    assert collector["spec"]["replicas"] == 2
    public = named(k8s, "Service", "leadrouter-collector")
    assert [p.get("targetPort", p["port"]) for p in public["spec"]["ports"]] == ["http"], \
        "the public collector Service must not expose the metrics port"


def test_k8s_pods_run_as_the_image_user(k8s: list[dict[str, Any]]) -> None:
    uid = dockerfile_uid()
    for d, c in leadrouter_containers(k8s):
        assert c["image"] == IMAGE
        pod = d["spec"]["template"]["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid, d["metadata"]["name"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    images = {c["image"] for d in workloads(k8s) for c in d["spec"]["template"]["spec"]["containers"]}
    assert {i for i in images if "leadrouter" in i} == {IMAGE}


def test_k8s_config_files_are_mounted_and_valid(k8s: list[dict[str, Any]], tmp_path: Path) -> None:
    files = named(k8s, "ConfigMap", "leadrouter-files")
    cm = load_settings(named(k8s, "ConfigMap", "leadrouter-settings")["data"])
    keys = {setting: cm.value(setting).name for setting in FILE_SETTINGS}
    assert set(files["data"]) == set(keys.values())
    assert {"scoring.yaml", "routing.yaml"} <= set(files["data"])
    for setting, key in keys.items():
        (tmp_path / key).write_text(files["data"][key], encoding="utf-8")
        load_config_file(setting, tmp_path / key)
    for d, c in leadrouter_containers(k8s):
        s = load_settings({**docker_settings_env(), **container_env(k8s, c)})
        volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        for setting, key in keys.items():
            path = s.value(setting)
            assert path.name == key
            mounts = [m for m in c["volumeMounts"] if m["mountPath"] == str(path.parent)]
            assert len(mounts) == 1, f"{d['metadata']['name']}: nothing mounted at {path.parent}"
            assert "subPath" not in mounts[0], "a subPath mount never sees ConfigMap updates"
            assert volumes[mounts[0]["name"]]["configMap"]["name"] == "leadrouter-files"


def test_k8s_collector_spool_volume_fits_the_spool(k8s: list[dict[str, Any]]) -> None:
    d = named(k8s, "Deployment", "leadrouter-collector")
    (c,) = d["spec"]["template"]["spec"]["containers"]
    s = load_settings({**docker_settings_env(), **container_env(k8s, c)})
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == str(s.spool.dir)]
    volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    empty = volumes[mount["name"]]["emptyDir"]
    assert quantity_bytes(empty["sizeLimit"]) >= s.spool.max_bytes


def test_k8s_workers_do_not_outnumber_partitions(k8s: list[dict[str, Any]]) -> None:
    d = named(k8s, "Deployment", "leadrouter-worker")
    (c,) = d["spec"]["template"]["spec"]["containers"]
    s = load_settings({**docker_settings_env(), **container_env(k8s, c)})
    surge = d["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert 1 <= d["spec"]["replicas"] and d["spec"]["replicas"] + int(surge) <= s.kafka.topic_partitions


def test_k8s_topics_job_matches_ensure_topics(k8s: list[dict[str, Any]]) -> None:
    job = named(k8s, "Job", "leadrouter-topics")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    env = container_env(k8s, c)
    s = load_settings({k: v for k, v in named(k8s, "ConfigMap", "leadrouter-settings")["data"].items()})
    assert env["KAFKA_URL"] == s.kafka.url
    assert topic_commands("\n".join(c["args"])) == expected_topics(s)
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}


def test_k8s_autoscaler_and_disruption_budgets_target_real_pods(k8s: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(k8s, "Deployment")}
    (hpa,) = of_kind(k8s, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert ref["kind"] == "Deployment" and ref["name"] == "leadrouter-collector" and ref["name"] in deployments
    assert 1 <= hpa["spec"]["minReplicas"] <= deployments[ref["name"]]["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    pdbs = of_kind(k8s, "PodDisruptionBudget")
    assert len(pdbs) == 3
    for pdb in pdbs:
        assert len(pods_selected(k8s, pdb["spec"]["selector"]["matchLabels"])) == 1, pdb["metadata"]["name"]
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])


def test_k8s_secret_example_is_fake_and_not_applied_by_kustomize(k8s: list[dict[str, Any]]) -> None:
    (secret,) = of_kind(k8s, "Secret")
    assert secret["__file__"] == "secret.example.yaml"
    assert "data" not in secret, "use stringData so the fake values stay readable"
    assert {"LEADROUTER_TOKEN_SECRET", "SLACK_BOT_TOKEN", "LEADROUTER_SMTP_PASSWORD"} <= set(secret["stringData"])
    for key, value in secret["stringData"].items():
        assert re.search(r"fake|example", value, re.I), f"{key} looks like a real secret: {value!r}"
        if value.startswith(("xoxb-", "xoxp-", "xapp-")):
            assert re.search(r"fake|example", value, re.I)
    kust = load_one(K8S / "kustomization.yaml")
    resources = kust["resources"]
    assert "secret.example.yaml" not in resources
    assert kust["namespace"] == NAMESPACE
    for r in resources:
        assert (K8S / r).is_file(), r
    expected = {p.name for p in k8s_files()} - {"secret.example.yaml", "topics-job.yaml"}
    assert set(resources) == expected


def test_k8s_files_configmap_is_what_the_generator_writes() -> None:
    gen = load_module(K8S / "make_files_configmap.py", "leadrouter_make_files_configmap")
    for text in ("plain: 1\n", "  indented first line\nx: 1\n", "two trailing\n\n", "no newline"):
        assert yaml.safe_load(gen.render({"f.yaml": text}))["data"]["f.yaml"] == text
    # The generator reproduces the repository files exactly, whatever they hold now, and
    # holds one file per *_file setting (the packaged defaults).
    doc = yaml.safe_load(gen.current())
    assert doc["metadata"]["name"] == "leadrouter-files"
    assert {k: Path(p) for k, p in gen.FILES.items()} == {
        DEFAULTS.value(s).name: REPO / DEFAULTS.value(s).relative_to(PACKAGE_ROOT) for s in FILE_SETTINGS}
    for key, path in gen.FILES.items():
        assert doc["data"][key] == Path(path).read_text(encoding="utf-8"), key


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_manifests() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert ("Deployment", "leadrouter-worker") in kinds and ("Secret", "leadrouter-secrets") not in kinds
    assert all(d["metadata"].get("namespace", NAMESPACE) == NAMESPACE for d in docs)


# --------------------------------------------------------------------------- all files
def test_every_deploy_file_parses() -> None:
    expected = {
        "compose.yaml", "prometheus.yml", "grafana/provisioning/datasources/prometheus.yaml",
        "grafana/provisioning/dashboards/dashboards.yaml", "grafana/dashboards/leadrouter.json",
        "k8s/namespace.yaml", "k8s/configmap.yaml", "k8s/files-configmap.yaml", "k8s/secret.example.yaml",
        "k8s/collector.yaml", "k8s/worker.yaml", "k8s/admin.yaml", "k8s/topics-job.yaml", "k8s/kustomization.yaml",
    }
    found = set()
    for path in sorted(DEPLOY.rglob("*")):
        rel = path.relative_to(DEPLOY).as_posix()
        if path.suffix in {".yaml", ".yml"}:
            assert load_docs(path), f"{rel} is empty"
            found.add(rel)
        elif path.suffix == ".json":
            assert json.loads(path.read_text(encoding="utf-8"))
            found.add(rel)
    assert expected <= found, f"missing: {sorted(expected - found)}"
    for name in ("Dockerfile", "Dockerfile.dockerignore", "healthcheck.py", "leadrouter.env.example", "README.md"):
        assert (DEPLOY / name).is_file(), name


def test_image_name_and_build_command_are_the_same_everywhere() -> None:
    build = "docker build -f deploy/Dockerfile -t leadrouter:latest ."
    for path in (DEPLOY / "Dockerfile", DEPLOY / "README.md"):
        assert build in path.read_text(encoding="utf-8"), f"{path} should show `{build}`"
    mentioned = set()
    for path in [DEPLOY / "compose.yaml", *K8S.glob("*.yaml"), DEPLOY / "README.md"]:
        mentioned |= set(re.findall(r"(?<![\w/.-])leadrouter:[\w.-]+", path.read_text(encoding="utf-8")))
    assert mentioned == {IMAGE}, mentioned
