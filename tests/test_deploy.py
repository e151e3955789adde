"""The deployment files stay true: the Kubernetes manifests pass the Kubernetes schema (offline), the
grace period outlasts the drain, probes name routes the app has, compose and the Caddyfile agree with the
app, the Dockerfile installs through the one script CI runs too."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from switchboard.audio import smart_turn
from switchboard.config import load_config, parse_config
from switchboard.ops.drain import GOODBYE_SETTLE_S
from switchboard.pipeline.call import Providers
from switchboard.server import create_app
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests are meant for


def manifests() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kind(name: str) -> dict:
    found = [doc for path in manifests() for doc in documents(path) if doc["kind"] == name]
    assert len(found) == 1, name
    return found[0]


@pytest.mark.parametrize("path", manifests(), ids=lambda path: path.name)
def test_every_manifest_passes_the_kubernetes_schema(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises, naming the field


def test_the_schema_check_catches_a_mistake() -> None:
    deployment = kind("Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in manifests() if p.name != "secret.example.yaml")


def deploy_config(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://switchboard:pw@postgres/switchboard")
    return load_config(DEPLOY / "pipeline.yaml")


def test_the_configmap_carries_deploy_pipeline_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    carried = kind("ConfigMap")["data"]["pipeline.yaml"]
    assert carried == (DEPLOY / "pipeline.yaml").read_text()
    config = deploy_config(monkeypatch)
    assert config.database_url.startswith("postgresql://") and config.max_concurrent_calls


def test_the_grace_period_outlasts_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    config = deploy_config(monkeypatch)
    pod = kind("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    goodbye_s = max(p.end_call_watchdog_s for p in config.pipelines.values()) + GOODBYE_SETTLE_S
    needed = float(pre_stop[1]) + config.drain_timeout_s + goodbye_s
    assert pod["terminationGracePeriodSeconds"] > needed
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    stop_grace = compose["services"]["switchboard"]["stop_grace_period"]
    assert int(stop_grace.removesuffix("s")) > config.drain_timeout_s + goodbye_s


def test_probes_and_the_proxy_use_routes_the_app_serves() -> None:
    app = create_app(parse_config("pipelines: {default: {stt: {provider: pocketsphinx}, "
                                  "llm: {provider: scripted}, tts: {provider: espeak}}}"),
                     providers={"default": Providers(InstantSTT(), InstantLLM(), InstantTTS())})
    paths = {getattr(route, "path", None) for route in app.routes}
    container = kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" in paths
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" in paths
    assert container["ports"][0]["containerPort"] == 5050
    annotations = kind("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in paths
    assert re.search(r"health_uri /readyz\b", (DEPLOY / "Caddyfile").read_text())
    hpa_metric = kind("HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert hpa_metric == "switchboard_calls_active"


def test_compose_runs_postgres_replicas_and_a_tls_proxy() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "switchboard", "caddy"}
    switchboard = services["switchboard"]
    assert switchboard["deploy"]["replicas"] >= 2
    assert "@postgres/" in switchboard["environment"]["DATABASE_URL"]
    assert switchboard["build"]["dockerfile"] == "Dockerfile"
    assert (DEPLOY / switchboard["build"]["context"] / "Dockerfile").is_file()
    mounts = [volume.split(":")[0] for s in services.values() for volume in s.get("volumes", [])]
    for mount in mounts:
        if mount.startswith("./"):
            assert (DEPLOY / mount).is_file(), mount
    assert "443:443" in services["caddy"]["ports"]


def test_the_image_installs_through_the_script_ci_runs() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:[\d.]+-slim$", dockerfile, re.M)
    user = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^RUN sh deploy/install\.sh /opt/switchboard\b", dockerfile, re.M)
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for source in sources.split():
            assert (REPO / source).exists(), source
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^deploy/install\.sh \.venv test --editable\b", ci, re.M)
    dry_run = {**os.environ, "SWITCHBOARD_INSTALL_DRY_RUN": "1"}
    dry = subprocess.run(["sh", str(DEPLOY / "install.sh"), "/opt/switchboard"], capture_output=True,
                         text=True, env=dry_run, check=True, timeout=30)
    assert f"/opt/switchboard/bin/pip install --quiet {REPO}\n" in dry.stdout
    # the end-of-turn model's wheel, the version the code checks the file of
    assert f"/opt/switchboard/bin/pip install --quiet --no-deps {smart_turn.WHEEL}\n" in dry.stdout
    refused = subprocess.run(["sh", str(DEPLOY / "install.sh")], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "usage: deploy/install.sh VENV" in refused.stderr
