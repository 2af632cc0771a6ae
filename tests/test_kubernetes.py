"""The Kubernetes manifests (deploy/kubernetes): rendered as kustomize renders them, each
object validated offline against the Kubernetes API's schemas (`kubernetes-validate`), and
checked against the code: ports and probes against the catalog and the health routes, every
`LEADRELAY_` variable against the settings classes, the secrets `serve` needs, the scaling
metric against the one the services export.

No cluster runs here. Rendering is done in Python (the kustomization lists plain manifests, sets
the namespace and the image); where `kubectl` is installed its own `kustomize` must render the
same objects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography.fernet import Fernet

from leadrelay.catalog import SERVICES
from shared.metrics import NAMESPACE, ServiceMetrics
from tests.test_deploy import _env_names, _settings_class

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
"""The oldest Kubernetes the manifests are meant for (autoscaling/v2, policy/v1 are GA)."""
STAND_INS = {
    "LEADRELAY_ADMIN_TOKEN": "an-admin-token-0123456789",
    "LEADRELAY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "LEADRELAY_KAFKA_SASL_PASSWORD": "a-kafka-password",
}
"""What an operator puts in place of secret.yaml's placeholders."""


def render() -> list[dict[str, Any]]:
    """`kustomize build deploy/kubernetes` for what the kustomization uses: its resources in
    order, its namespace on every namespaced object, its image replacements."""
    kustomization = yaml.safe_load((KUSTOMIZE_DIR / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {"apiVersion", "kind", "namespace", "resources", "images"}
    assert not unknown, f"kustomization.yaml uses {sorted(unknown)}: render them here too"
    images = {image["name"]: image for image in kustomization.get("images", [])}
    objects: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((KUSTOMIZE_DIR / resource).read_text()):
            if document is None:
                continue
            if document["kind"] != "Namespace" and "namespace" in kustomization:
                document["metadata"]["namespace"] = kustomization["namespace"]
            for container in _containers(document):
                image = images.get(container["image"])
                if image is not None:
                    container["image"] = f"{image['newName']}:{image['newTag']}"
            objects.append(document)
    return objects


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod_spec(document)
    return [] if pod is None else list(pod.get("containers", []))


def _pod_spec(document: dict[str, Any]) -> dict[str, Any] | None:
    if document["kind"] in {"Deployment", "Job", "StatefulSet"}:
        spec: dict[str, Any] = document["spec"]["template"]["spec"]
        return spec
    return None


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render()


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [item for item in objects
             if item["kind"] == kind and item["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind}/{name}"
    return found[0]


def environment(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """What the container's process sees: its ConfigMaps and Secrets, then its own `env`."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(one(objects, "Secret", source["secretRef"]["name"])["stringData"])
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    return env


def test_every_object_is_valid_against_the_kubernetes_schemas(
    objects: list[dict[str, Any]],
) -> None:
    assert objects
    for item in objects:
        try:
            kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{item['kind']}/{item['metadata']['name']}: {error.message} at "
                        f"{'.'.join(str(part) for part in error.path)}")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_itself_renders_the_same_objects(objects: list[dict[str, Any]]) -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(KUSTOMIZE_DIR)], capture_output=True,
                              text=True, timeout=60, check=True).stdout
    theirs = [item for item in yaml.safe_load_all(rendered) if item]

    def key(item: dict[str, Any]) -> tuple[str, str, str]:
        return item["kind"], item["metadata"]["name"], item["metadata"].get("namespace", "")

    assert sorted(map(key, theirs)) == sorted(map(key, objects))
    ours = {key(item): item for item in objects}
    for item in theirs:
        assert item == ours[key(item)], f"{key(item)} renders differently"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_runs_serve_with_probes_resources_and_a_locked_down_pod(
    objects: list[dict[str, Any]], name: str
) -> None:
    deployment = one(objects, "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    port = SERVICES[name].port
    assert container["args"] == ["serve", name, "--host", "0.0.0.0", "--port", str(port)]
    assert [entry["containerPort"] for entry in container["ports"]] == [port]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001, "the image's user (deploy/Dockerfile)"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    service = one(objects, "Service", name)
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    assert [entry["port"] for entry in service["spec"]["ports"]] == [port]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_a_disruption_budget_covers_each_service(
    objects: list[dict[str, Any]], name: str
) -> None:
    budget = one(objects, "PodDisruptionBudget", name)
    labels = one(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] == 1


def test_the_migration_job_migrates_with_the_services_settings(
    objects: list[dict[str, Any]],
) -> None:
    job = one(objects, "Job", "leadrelay-migrate")
    [container] = job["spec"]["template"]["spec"]["containers"]
    [service_container] = one(objects, "Deployment", "ingest")["spec"]["template"]["spec"][
        "containers"]
    assert container["args"] == ["migrate"]
    assert container["image"] == service_container["image"]
    assert container["envFrom"] == service_container["envFrom"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_leadrelay_variables_are_settings_fields(
    objects: list[dict[str, Any]], name: str
) -> None:
    [container] = one(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"]
    known = _env_names(_settings_class(name)) | {
        f"LEADRELAY_{service.upper()}_DATABASE_URL" for service in SERVICES}
    unknown = {key for key in environment(objects, container)
               if key.upper().startswith("LEADRELAY_") and key.upper() not in known}
    assert not unknown, f"{name}: no settings field reads {sorted(unknown)}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_the_environment_loads_into_settings_once_the_secrets_are_real(
    objects: list[dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `serve` would see: with secret.yaml's placeholders it refuses (they are too short
    or not keys); with real values every setting parses and no secret is missing."""
    [container] = one(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"]
    for key in list(os.environ):
        if key.upper().startswith("LEADRELAY_") or key.upper() in {"DATABASE_URL",
                                                                  "KAFKA_BOOTSTRAP_SERVERS"}:
            monkeypatch.delenv(key)
    env = environment(objects, container)
    for key, value in env.items():
        if value:
            monkeypatch.setenv(key, value)
    cls = _settings_class(name)
    with pytest.raises(ValueError, match=r"admin_token"):
        cls()
    for key, value in STAND_INS.items():
        monkeypatch.setenv(key, value)
    settings = cls()
    assert settings.missing_secrets() == [], "serve would refuse to start"
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_enable_idempotence is True
    assert settings.kafka_replication_factor == 3
    assert settings.kafka_min_insync_replicas == 2
    assert settings.lead_keys_url == f"http://ingest:{SERVICES['ingest'].port}"


def test_the_secret_holds_every_secret_serve_needs(objects: list[dict[str, Any]]) -> None:
    secret = one(objects, "Secret", "leadrelay-secrets")["stringData"]
    assert {"LEADRELAY_ADMIN_TOKEN", "LEADRELAY_ENCRYPTION_KEYS", "DATABASE_URL",
            "LEADRELAY_KAFKA_SASL_PASSWORD"} <= set(secret)
    config = one(objects, "ConfigMap", "leadrelay-config")["data"]
    assert not {key for key in config
                if key.endswith(("_PASSWORD", "_TOKEN", "ENCRYPTION_KEYS", "DATABASE_URL"))}


@pytest.mark.parametrize("name", ["scorer", "router"])
def test_consumers_scale_on_the_lag_they_export_up_to_the_partitions(
    objects: list[dict[str, Any]], name: str
) -> None:
    scaler = one(objects, "HorizontalPodAutoscaler", name)
    assert scaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": name}
    [metric] = scaler["spec"]["metrics"]
    exported = metric["external"]["metric"]["name"]
    assert exported.startswith(f"{NAMESPACE}_")
    assert f"# TYPE {exported} gauge" in ServiceMetrics(name).render().decode(), (
        f"the services export no gauge {exported}")
    partitions = int(one(objects, "ConfigMap", "leadrelay-config")["data"][
        "LEADRELAY_KAFKA_TOPIC_PARTITIONS"])
    assert scaler["spec"]["maxReplicas"] <= partitions, "replicas past the partitions sit idle"
    assert scaler["spec"]["minReplicas"] >= 2, "one pod down must not stop the consumer"
