"""The optional split deployment (issue 15): scoring workers and alert workers in processes of their own.

``deploy/compose.split.yaml`` is laid over ``compose.yaml``; ``deploy/k8s-split/`` is a kustomize
overlay of ``deploy/k8s``.  Each alerts service must be the base worker but for its role (and name,
labels, replicas), and the base workers become the scoring side; the single-process default stays
as it is (test_deploy_files.py checks the base files).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from router.cli.main import build_parser
from router.settings import load_settings
from tests.unit.deploy.test_deploy_files import (
    DEPLOY,
    K8S,
    compose_service_env,
    load_docs,
    load_one,
)

SPLIT_K8S = DEPLOY / "k8s-split"


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    doc: dict[str, Any] = load_one(DEPLOY / "compose.yaml")
    return doc


@pytest.fixture(scope="module")
def split() -> dict[str, Any]:
    doc: dict[str, Any] = load_one(DEPLOY / "compose.split.yaml")
    return doc


def test_the_default_compose_workers_run_everything(base: dict[str, Any]) -> None:
    assert load_settings(compose_service_env(base["services"]["worker"])).worker.role == "all"
    assert "worker-alerts" not in base["services"]


def test_compose_split_turns_the_workers_into_the_scoring_side(base: dict[str, Any], split: dict[str, Any]) -> None:
    override = split["services"]["worker"]
    assert set(override) == {"environment"}, "the override changes only the workers' role"
    merged = copy.deepcopy(base["services"]["worker"])
    merged["environment"].update(override["environment"])
    assert load_settings(compose_service_env(merged)).worker.role == "scoring"


def test_compose_split_alerts_service_is_the_worker_but_for_its_role(base: dict[str, Any],
                                                                     split: dict[str, Any]) -> None:
    worker, alerts = base["services"]["worker"], split["services"]["worker-alerts"]
    assert build_parser().parse_args(alerts["command"]).command == "worker"
    for key in ("image", "build", "restart", "command", "env_file", "volumes", "depends_on", "healthcheck"):
        assert alerts[key] == worker[key], key
    assert alerts["environment"] == {**worker["environment"], "LEADROUTER_WORKER_ROLE": "alerts"}
    settings = load_settings(compose_service_env(alerts))
    assert settings.worker.role == "alerts"
    # Prometheus discovers the workers by the DNS name `worker` (prometheus.yml): the alias adds these.
    assert "worker" in alerts["networks"]["default"]["aliases"]
    prom = load_one(DEPLOY / "prometheus.yml")
    assert any("worker" in sd["names"] for job in prom["scrape_configs"] for sd in job.get("dns_sd_configs", []))
    # Each side reads its own topic: each counts against the partitions on its own.
    for svc in (worker, alerts):
        assert int(svc["deploy"]["replicas"]) <= settings.kafka.topic_partitions


def _k8s(path: Any) -> list[dict[str, Any]]:
    return load_docs(path)


def test_k8s_split_alerts_pods_are_the_worker_pods_but_for_role_name_labels_and_replicas() -> None:
    kust = load_one(SPLIT_K8S / "kustomization.yaml")
    assert kust["resources"] == ["../k8s", "worker-alerts.yaml"]
    base = _k8s(K8S / "worker.yaml")
    alerts = _k8s(SPLIT_K8S / "worker-alerts.yaml")
    assert [d["kind"] for d in alerts] == [d["kind"] for d in base]
    text = yaml.safe_dump(base).replace("name: leadrouter-worker\n", "name: leadrouter-worker-alerts\n").replace(
        "app.kubernetes.io/component: worker\n", "app.kubernetes.io/component: worker-alerts\n")
    expected = yaml.safe_load(text)
    deploy = expected[0]
    deploy["spec"]["replicas"] = alerts[0]["spec"]["replicas"]
    deploy["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "LEADROUTER_WORKER_ROLE",
                                                                   "value": "alerts"}]
    assert alerts == expected
    assert 1 <= alerts[0]["spec"]["replicas"] <= load_settings({}).kafka.topic_partitions
    # The patch makes the base workers the scoring side.
    (patch,) = kust["patches"]
    assert patch["target"] == {"kind": "Deployment", "name": "leadrouter-worker"}
    ops = yaml.safe_load(patch["patch"])
    assert ops == [{"op": "add", "path": "/spec/template/spec/containers/0/env",
                    "value": [{"name": "LEADROUTER_WORKER_ROLE", "value": "scoring"}]}]
    assert "env" not in base[0]["spec"]["template"]["spec"]["containers"][0], "the patch would replace it"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_k8s_split_renders_a_scoring_and_an_alerts_deployment() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(SPLIT_K8S)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    roles = {}
    for name in ("leadrouter-worker", "leadrouter-worker-alerts"):
        (container,) = docs[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        roles[name] = load_settings({"LEADROUTER_WORKER_ROLE": env["LEADROUTER_WORKER_ROLE"]}).worker.role
    assert roles == {"leadrouter-worker": "scoring", "leadrouter-worker-alerts": "alerts"}
    # No selector picks the other side's pods.
    for kind in ("Service", "PodDisruptionBudget"):
        for name, component in (("leadrouter-worker", "worker"), ("leadrouter-worker-alerts", "worker-alerts")):
            spec = docs[(kind, name)]["spec"]
            selector = spec["selector"].get("matchLabels", spec["selector"])
            assert selector["app.kubernetes.io/component"] == component


def test_the_readme_shows_both_ways() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for needle in ("docker compose -f deploy/compose.yaml -f deploy/compose.split.yaml up", "kubectl apply -k deploy/k8s-split",
                   "LEADROUTER_WORKER_ROLE"):
        assert needle in readme, needle
