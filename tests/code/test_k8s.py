"""The Kubernetes manifests: valid against the Kubernetes schemas, and consistent with each other
and with the service's settings."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from settings import load_settings
from tests.conftest import REPO_ROOT

K8S = REPO_ROOT / "ops" / "k8s"
KUBERNETES_VERSIONS = ["1.30.0", "1.33.0"]


def _manifests() -> dict[str, dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    documents = {}
    for name in kustomization["resources"]:
        (document,) = yaml.safe_load_all((K8S / name).read_text())
        documents[document["kind"]] = document
    return documents


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_manifests_validate_against_the_kubernetes_schemas(version):
    for kind, document in _manifests().items():
        if kind == "ServiceMonitor":
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # a CRD, checked below
                kubernetes_validate.validate(document, version, strict=True)
            continue
        kubernetes_validate.validate(document, version, strict=True)


def test_a_broken_manifest_is_refused():
    deployment = _manifests()["Deployment"]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_manifests_agree_with_each_other_and_the_service(monkeypatch):
    m = _manifests()
    pod = m["Deployment"]["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 3000, "grpc": load_settings().serving.grpc_port}
    for selector in (
        m["Deployment"]["spec"]["selector"]["matchLabels"],
        m["Service"]["spec"]["selector"],
        m["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    assert {p["targetPort"] for p in m["Service"]["spec"]["ports"]} == set(ports)
    assert m["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == (
        m["Deployment"]["metadata"]["name"]
    )

    monitor = m["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        m["Service"]["metadata"]["labels"].items()
    )
    service_ports = {p["name"] for p in m["Service"]["spec"]["ports"]}
    assert all(e["port"] in service_ports for e in monitor["spec"]["endpoints"])
    # The alert rules select job="fraud-bento": the job label comes from the Service's label.
    assert m["Service"]["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "fraud-bento"

    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    from_secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
    }
    # the database URL and password come from one Secret; libpq reads PGPASSWORD
    assert from_secrets["FRAUD_MONITORING__DATABASE_URL"]["name"] == (
        from_secrets["PGPASSWORD"]["name"]
    )
    fraud_env = {k: v for k, v in env.items() if k.startswith("FRAUD_")}
    assert fraud_env
    for name, value in fraud_env.items():
        monkeypatch.setenv(name, value)
    load_settings()  # unknown or malformed FRAUD_ variables fail here

    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"]
    mounts = {v["mountPath"] for v in container["volumeMounts"]}
    assert {"/tmp", env["BENTOML_HOME"]} <= mounts  # noqa: S108 - an emptyDir mount
    (profiles,) = [
        v for v in container["volumeMounts"]
        if env["FRAUD_MONITORING__DIRECTORY"].startswith(v["mountPath"])
    ]  # fmt: skip
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == profiles["name"]]
    claim = m["PersistentVolumeClaim"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every replica writes there
    keys_file = env["FRAUD_SECURITY__API_KEYS_FILE"]
    (secret_mount,) = [v for v in container["volumeMounts"] if keys_file.startswith(v["mountPath"])]
    (secret,) = [v for v in pod["spec"]["volumes"] if v["name"] == secret_mount["name"]]
    assert secret_mount["readOnly"] and secret["secret"]["secretName"]
    probes = {
        name: container[name]["httpGet"]["path"]
        for name in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes == {
        "startupProbe": "/readyz",
        "readinessProbe": "/readyz",
        "livenessProbe": "/livez",
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_retraining_cronjob_validates_and_runs_the_retrain_command(version, monkeypatch):
    (cronjob,) = yaml.safe_load_all((K8S / "retrain-cronjob.yaml").read_text())
    kubernetes_validate.validate(cronjob, version, strict=True)
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"][1:] == [
        "-m", "training", "retrain", "--data", "/data/latest.parquet", "--promote"
    ]  # fmt: skip
    for variable in container["env"]:
        if variable["name"].startswith("FRAUD_"):
            monkeypatch.setenv(variable["name"], variable["value"])
    load_settings()  # the variables exist and parse
