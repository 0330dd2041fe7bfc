#!/usr/bin/env bash
# Checks the Helm charts, the plain manifests and the Compose file, offline:
#
#  0. `helm dependency build` vendors the library chart charts/lockkeeper-lib into the charts that
#     use it (charts/lockkeeper/charts/*.tgz, git-ignored; Chart.lock is committed), then
#     `helm lint --strict` on the library, and its defaults and appVersion must equal the
#     application chart's values and appVersion;
#  1. `helm lint --strict` and `helm template` for the default values, each gating mode
#     (readinessProbe, readinessGate, label), native and plain sidecar, the Kubernetes
#     integration off, and a values file that turns every optional feature on;
#  2. every rendered manifest validated with `kubernetes-validate --strict` against the oldest
#     Kubernetes the chart supports with native sidecars (1.29) and the one the crate targets
#     (1.33). Prometheus Operator kinds (ServiceMonitor, PodMonitor, PrometheusRule) have no
#     offline schema: they are skipped by kubernetes-validate, with a message, and get
#     structural checks here instead (and `promtool check rules` on the alert expressions);
#  3. what each mode must render (probe, readiness gate, Service selector, least-privilege RBAC,
#     a rollout strategy that cannot deadlock, security contexts, sidecar probes not on /readyz),
#     and that the real `lockkeeper run --config` accepts each generated config file;
#  4. values the schema must reject (`helm lint --set gating.mode=bogus` must FAIL, and others)
#     and combinations the templates must refuse (a rollout strategy that would deadlock, a
#     label/readinessGate mode without the Kubernetes integration, ...);
#  5. the rendered examples committed under deploy/example/ match `helm template` (drift fails;
#     `scripts/check-chart.sh --update` rewrites them), and deploy/etcd.yaml validates and runs
#     etcd's official 3.5 image (pinned, the same tag as the Compose file) with the binary named
#     in `command` (the image has no ENTRYPOINT and no shell) and no exec probes;
#  6. the example application chart examples/my-app, which adds the sidecar to its own Deployment
#     with lockkeeper-lib's named templates: `helm lint --strict`, `helm template` and
#     kubernetes-validate (same versions) per gating mode and sidecar variant, and what it renders
#     for the sidecar (the container, where it runs, its volumes and config file, the pod's
#     service account and token), the gating wiring (probe, readiness gate, Service selector,
#     strategy) and the RBAC (ServiceAccount, Role rules, RoleBinding) must equal what
#     charts/lockkeeper renders for the same lockkeeper values; the library's own refusals too;
#  7. docker-compose.yml against the Compose JSON schema plus structural assertions (3 etcd
#     members of etcd's official image with an explicit entrypoint and an exec-form healthcheck
#     that runs etcdctl directly, the sidecars, one gated app each); `docker compose config` as
#     well, where a Compose plugin is installed. No image is pulled or built here.
#
# Tools come from scripts/install-helm.sh (repo-local, under .tools/). Exit 0 only if all pass.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

UPDATE=0
case "${1:-}" in
  --update) UPDATE=1 ;;
  "") ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

HELM=$(bash scripts/install-helm.sh | tail -n 1)
PY=.tools/venv/bin/python
KV=.tools/venv/bin/kubernetes-validate
COMPOSE_SCHEMA=.tools/compose-spec/compose-spec.json
CHART=charts/lockkeeper
LIB_CHART=charts/lockkeeper-lib
EXAMPLE_CHART=examples/my-app
K8S_VERSIONS=(1.29.0 1.33.0)
EXAMPLE_MODES=(readinessProbe readinessGate label)

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); printf '  ok   %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf '  FAIL %s\n' "$*"; }
step() { printf '\n==> %s\n' "$*"; }

# The structural checks, in Python (PyYAML from the venv).
cat >"$WORK/check.py" <<'PYTHON'
import json
import re
import sys

import yaml

CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
# etcd's official images (a 3.5 release, pinned by tag). They are distroless: these binaries and
# no shell, and no ENTRYPOINT (CMD is /usr/local/bin/etcd).
ETCD_IMAGE = r"(gcr\.io/etcd-development/etcd|quay\.io/coreos/etcd):v3\.5\.[0-9]+"
ETCD_BINARIES = {"/usr/local/bin/etcd", "/usr/local/bin/etcdctl", "/usr/local/bin/etcdutl"}
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)


def docs(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]


def containers(pod):
    return pod.get("initContainers", []) + pod.get("containers", [])


def manifest(case, path, out, mode, native, kube, events):
    native, kube, events = native == "true", kube == "true", events == "true"
    objs = docs(path)
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    kept = [o for o in objs if o["kind"] not in CRD_KINDS]
    with open(out, "w") as f:
        yaml.safe_dump_all(kept, f, sort_keys=False)
    for o in objs:
        if o["kind"] in CRD_KINDS:
            print(f"  skip {o['kind']}/{o['metadata']['name']}: a Prometheus Operator CRD, "
                  "no offline schema (structure checked here instead)")
            check(o["apiVersion"] == "monitoring.coreos.com/v1", f"{o['kind']} apiVersion")
            spec = o.get("spec", {})
            if o["kind"] == "ServiceMonitor":
                check(spec["endpoints"][0]["port"] == "lockkeeper", "ServiceMonitor port")
                check(spec["selector"]["matchLabels"].get("app.kubernetes.io/component") == "metrics",
                      "ServiceMonitor selects the metrics Service")
            elif o["kind"] == "PodMonitor":
                check(spec["podMetricsEndpoints"][0]["port"] == "lockkeeper", "PodMonitor port")
            else:
                with open(out + ".rules.yaml", "w") as f:
                    yaml.safe_dump({"groups": spec["groups"]}, f, sort_keys=False)
                rules = [r for g in spec["groups"] for r in g["rules"]]
                names = {r["alert"] for r in rules}
                for want in ("LockkeeperNoHolder", "LockkeeperLockFlapping", "LockkeeperKeepaliveFailures"):
                    check(want in names, f"PrometheusRule has {want}")
                exprs = " ".join(r["expr"] for r in rules)
                for metric in ("lockkeeper_lock_held", "lockkeeper_lock_losses_total",
                               "lockkeeper_lease_keepalive_failures_total"):
                    check(metric in exprs, f"PrometheusRule uses {metric}")
                check(exprs.count("(") == exprs.count(")"), "PromQL parentheses balance")

    (dep,) = by_kind["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    names = [c["name"] for c in containers(pod)]
    check("lockkeeper" in names, "sidecar container present")
    sidecar = next(c for c in containers(pod) if c["name"] == "lockkeeper")
    app = pod["containers"][0]
    if native:
        check(sidecar in pod.get("initContainers", []), "native: sidecar is an init container")
        check(sidecar.get("restartPolicy") == "Always", "native: restartPolicy Always")
    else:
        check(sidecar in pod["containers"], "plain: sidecar is a regular container")
        check("restartPolicy" not in sidecar, "plain: no container restartPolicy")
        check(not pod.get("initContainers"), "plain: no init containers")
    # The sidecar itself must never be gated on holding the lock.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = sidecar.get(probe, {}).get("httpGet", {}).get("path")
        check(path != "/readyz", f"sidecar {probe} is not /readyz")
    check(sidecar["livenessProbe"]["httpGet"]["path"] == "/livez", "sidecar liveness is /livez")
    env = {e["name"]: e for e in sidecar.get("env", [])}
    for var, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        check(env.get(var, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == field,
              f"downward API {var}")
    # Security: non-root, read-only root filesystem, no capabilities, for every container.
    check(pod["securityContext"].get("runAsNonRoot") is True, "pod runAsNonRoot")
    for c in containers(pod):
        sc = c.get("securityContext", {})
        check(sc.get("runAsNonRoot") is True, f"{c['name']}: runAsNonRoot")
        check(sc.get("readOnlyRootFilesystem") is True, f"{c['name']}: readOnlyRootFilesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{c['name']}: no privilege escalation")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{c['name']}: drop ALL")

    # Gating.
    gates = [g["conditionType"] for g in pod.get("readinessGates", [])]
    probe_path = app.get("readinessProbe", {}).get("httpGet", {}).get("path")
    config = yaml.safe_load(by_kind["ConfigMap"][0]["data"]["config.yaml"])
    k8s = config["kubernetes"]
    if mode == "readinessProbe":
        check(probe_path == "/readyz", "readinessProbe mode: app probes /readyz")
        check(app["readinessProbe"]["httpGet"]["port"] == sidecar["ports"][0]["containerPort"],
              "readinessProbe mode: probe targets the sidecar port")
        check(not gates, "readinessProbe mode: no readinessGates")
    elif mode == "readinessGate":
        check(gates == ["lockkeeper.io/lock-held"], "readinessGate mode: pod readinessGates")
        check(k8s.get("condition_type") == "lockkeeper.io/lock-held", "readinessGate mode: config condition_type")
        check(probe_path != "/readyz", "readinessGate mode: app keeps its own probe")
    else:
        check(not gates and probe_path != "/readyz", "label mode: pods not gated on the lock")
        check(k8s.get("label") == "lockkeeper.io/holder", "label mode: config label")
        check(k8s.get("condition_type") == "", "label mode: no condition")
        for svc in by_kind.get("Service", []):
            if not svc["metadata"]["name"].endswith("-metrics"):
                check(svc["spec"]["selector"].get("lockkeeper.io/holder") == "true",
                      "label mode: Service selects the holder label")
        check("PodDisruptionBudget" in by_kind, "label mode: PodDisruptionBudget")
    if mode != "label":
        check("PodDisruptionBudget" not in by_kind, "gated mode: no PodDisruptionBudget")
    check(k8s["enabled"] == ("on" if kube else "off"), "config kubernetes.enabled")
    for metrics_svc in [s for s in by_kind.get("Service", []) if s["metadata"]["name"].endswith("-metrics")]:
        check(metrics_svc["spec"].get("publishNotReadyAddresses") is True, "metrics Service lists standbys")

    # Rollout: in gated modes only one pod is ever Ready, so every replica may be unavailable.
    strategy = dep["spec"]["strategy"]
    if mode != "label" and strategy["type"] == "RollingUpdate":
        mu = str(strategy["rollingUpdate"]["maxUnavailable"])
        check(mu == "100%" or (mu.isdigit() and int(mu) >= dep["spec"]["replicas"]),
              f"gated mode: rollout cannot deadlock (maxUnavailable={mu})")

    # RBAC: least privilege per mode, nothing without the integration.
    rules = {(g, r): set(rule["verbs"]) for role in by_kind.get("Role", []) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    if not kube:
        for kind in ("Role", "RoleBinding", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
            check(kind not in by_kind, f"integration off: no {kind}")
        check(pod.get("automountServiceAccountToken") is False, "integration off: no token mounted")
    else:
        want = {}
        # A gated mode reads the pod for its resourceVersion (the precondition of "held" writes).
        if mode == "readinessGate":
            want[("", "pods/status")] = {"patch"}
            want[("", "pods")] = {"get"}
        if mode == "label":
            want[("", "pods")] = {"get", "patch"}
        if events:
            want.setdefault(("", "pods"), set()).add("get")
            want[("events.k8s.io", "events")] = {"create"}
        check(rules == want, f"RBAC is exactly {want}, got {rules}")
        check("ClusterRole" not in by_kind, "no cluster-wide RBAC")
    for o in objs:
        check(o["metadata"].get("namespace") or o["kind"].startswith("Cluster"), f"{o['kind']} namespaced")


def compose(path, schema_path):
    import jsonschema

    data = yaml.safe_load(open(path))
    schema = json.load(open(schema_path))
    for e in jsonschema.Draft201909Validator(schema).iter_errors(data):
        errors.append(f"compose schema: {list(e.path)}: {e.message}")
    services = data["services"]
    etcd = {n: s for n, s in services.items() if n.startswith("etcd-")}
    keepers = {n: s for n, s in services.items() if n.startswith("lockkeeper-")}
    apps = {n: s for n, s in services.items() if n.startswith("app-")}
    check(len(etcd) == 3, f"3 etcd members, got {sorted(etcd)}")
    check(2 <= len(keepers) <= 3, f"2-3 lockkeeper sidecars, got {sorted(keepers)}")
    check(len(apps) == len(keepers), "one app per sidecar")
    peers = {f"{n}=http://{n}:2380" for n in etcd}
    for n, s in etcd.items():
        env = s["environment"]
        check(set(env["ETCD_INITIAL_CLUSTER"].split(",")) == peers, f"{n}: initial cluster lists all members")
        check(env["ETCD_NAME"] == n, f"{n}: member name")
        check(env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == f"http://{n}:2380", f"{n}: peer URL")
        check(env["ETCD_ADVERTISE_CLIENT_URLS"] == f"http://{n}:2379", f"{n}: client URL")
        check(re.fullmatch(ETCD_IMAGE, s.get("image", "")) is not None,
              f"{n}: etcd's official 3.5 image pinned by tag, got {s.get('image')}")
        check("build" not in s, f"{n}: pulled, not built")
        check(s.get("entrypoint") == ["/usr/local/bin/etcd"], f"{n}: entrypoint /usr/local/bin/etcd, given explicitly")
        check("command" not in s, f"{n}: configured by ETCD_* variables, no command")
        test = s.get("healthcheck", {}).get("test", [])
        check(isinstance(test, list) and test[:1] == ["CMD"] and len(test) > 1 and test[1] in ETCD_BINARIES,
              f"{n}: exec-form healthcheck running a binary of the image (no CMD-SHELL: no shell there), got {test}")
        check("endpoint" in test and "health" in test, f"{n}: healthcheck is etcdctl endpoint health")
        check(s.get("read_only") is True and s.get("cap_drop") == ["ALL"], f"{n}: hardened")
        check(env["ETCD_DATA_DIR"].startswith("/var/lib/etcd/"), f"{n}: data dir on the volume")
        check(any(v.split(":")[1] == "/var/lib/etcd" for v in s.get("volumes", [])), f"{n}: data volume")
    check(len({s.get("image") for s in etcd.values()}) == 1, "one etcd image for all members")
    locks = set()
    host_ports = []
    for n, s in keepers.items():
        env = s["environment"]
        endpoints = set(env["LOCKKEEPER_ETCD_ENDPOINTS"].split(","))
        check(endpoints == {f"http://{e}:2379" for e in etcd}, f"{n}: talks to every etcd member")
        locks.add(env["LOCKKEEPER_LOCK"])
        check(env["LOCKKEEPER_IDENTITY"] == n, f"{n}: identity")
        check(env["LOCKKEEPER_LISTEN"].endswith(":8475"), f"{n}: listens on 8475")
        check(set(s["depends_on"]) == set(etcd), f"{n}: depends on etcd")
        check(s.get("read_only") is True and s.get("cap_drop") == ["ALL"], f"{n}: hardened")
        host_ports += [p.rsplit(":", 2)[-2] for p in s.get("ports", [])]
    check(len(locks) == 1, f"all sidecars contend for one lock, got {locks}")
    check(len(host_ports) == len(set(host_ports)), f"distinct host ports {host_ports}")
    sidecar_of = set()
    for n, s in apps.items():
        mode = s.get("network_mode", "")
        check(mode.startswith("service:") and mode[8:] in keepers, f"{n}: shares a sidecar's network")
        sidecar_of.add(mode[8:])
        deps = s.get("depends_on", [])
        check(mode[8:] in deps, f"{n}: depends on its sidecar")
        script = " ".join(s["command"])
        check("127.0.0.1:8475/readyz" in script, f"{n}: works only while /readyz says held")
    check(sidecar_of == set(keepers), "every sidecar has its app")
    check(set(data.get("volumes", {})) >= {n for n in etcd}, "named volumes for etcd")


def etcdmanifest(path, compose_path):
    """deploy/etcd.yaml runs the same official etcd image as the Compose file, without a shell."""
    (sts,) = [d for d in docs(path) if d["kind"] == "StatefulSet"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    compose_images = {s.get("image") for n, s in yaml.safe_load(open(compose_path))["services"].items()
                      if n.startswith("etcd-")}
    check(re.fullmatch(ETCD_IMAGE, c["image"]) is not None, f"etcd's official 3.5 image pinned by tag, got {c['image']}")
    check(compose_images == {c["image"]}, f"the same image as docker-compose.yml: {c['image']} vs {compose_images}")
    check(c.get("command") == ["/usr/local/bin/etcd"], "command is /usr/local/bin/etcd (the image has no ENTRYPOINT)")
    check(all(a.startswith("--") for a in c.get("args", [])), "args are etcd flags only")
    check(any(a.startswith("--data-dir=/var/lib/etcd/") for a in c["args"]), "data dir on the volume")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        check("exec" not in c.get(probe, {}), f"{probe}: no exec probe (no shell in the image)")
    pod = sts["spec"]["template"]["spec"]
    check(pod["securityContext"].get("runAsNonRoot") is True and pod["securityContext"].get("fsGroup"),
          "non-root, with an fsGroup so the volume is writable")
    check(c["securityContext"].get("readOnlyRootFilesystem") is True, "read-only root filesystem")


def config(path, out, root):
    """Writes the sidecar config from the rendered ConfigMap, its file paths moved under root."""
    (cm,) = [d for d in docs(path) if d["kind"] == "ConfigMap"]
    text = cm["data"]["config.yaml"].replace("/etc/lockkeeper/", root.rstrip("/") + "/etc/lockkeeper/")
    open(out, "w").write(text)


def example(ex_path, app_path, mode, native):
    """examples/my-app renders the sidecar, gating wiring and RBAC exactly as charts/lockkeeper."""
    import hashlib

    native = native == "true"
    ex_objs, app_objs = docs(ex_path), docs(app_path)

    def kinds(objs):
        out = {}
        for o in objs:
            out.setdefault(o["kind"], []).append(o)
        return out

    ex, app = kinds(ex_objs), kinds(app_objs)
    (ex_dep,), (app_dep,) = ex["Deployment"], app["Deployment"]
    ex_pod, app_pod = ex_dep["spec"]["template"]["spec"], app_dep["spec"]["template"]["spec"]

    def sidecar(pod):
        found = [c for c in containers(pod) if c["name"] == "lockkeeper"]
        check(len(found) == 1, "exactly one lockkeeper container")
        return found[0] if found else {}

    ex_sc, app_sc = sidecar(ex_pod), sidecar(app_pod)
    check(ex_sc == app_sc, f"sidecar container equal to the chart's:\n    {ex_sc}\n    {app_sc}")
    where = "initContainers" if native else "containers"
    check(ex_sc in ex_pod.get(where, []), f"sidecar is in {where}")
    if native:
        check(ex_sc.get("restartPolicy") == "Always", "native sidecar: restartPolicy Always")
    else:
        check(not ex_pod.get("initContainers"), "plain sidecar: no init containers")
    # The example's own container stays first; the sidecar never probes /readyz.
    ex_app = ex_pod["containers"][0]
    check(ex_app["name"] == "my-app", "the app container comes first")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check(ex_sc.get(probe, {}).get("httpGet", {}).get("path") != "/readyz", f"sidecar {probe} not /readyz")
    for c in containers(ex_pod):
        sc = c.get("securityContext", {})
        check(sc.get("runAsNonRoot") is True and sc.get("readOnlyRootFilesystem") is True
              and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"],
              f"{c['name']}: hardened")

    # The ConfigMap the pod mounts, and its config file.
    def config_map(objs, pod):
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        name = vols.get("lockkeeper-config", {}).get("configMap", {}).get("name")
        cms = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
        check(len(cms) == 1, f"the pod mounts the rendered ConfigMap {name}")
        return cms[0] if cms else {"metadata": {"name": name}, "data": {"config.yaml": ""}}

    ex_cm, app_cm = config_map(ex_objs, ex_pod), config_map(app_objs, app_pod)
    check(ex_cm["data"]["config.yaml"] == app_cm["data"]["config.yaml"], "config.yaml equal to the chart's")
    want_sum = hashlib.sha256(ex_cm["data"]["config.yaml"].encode()).hexdigest()
    got_sum = ex_dep["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/lockkeeper-config")
    check(got_sum == want_sum, "checksum/lockkeeper-config is the sha256 of config.yaml")

    def lk_volumes(pod, cm_name):
        out = []
        for v in pod.get("volumes", []):
            if v["name"] in ("lockkeeper-config", "etcd-tls", "etcd-auth"):
                v = json.loads(json.dumps(v))
                if "configMap" in v:
                    check(v["configMap"]["name"] == cm_name, "config volume names the ConfigMap")
                    v["configMap"]["name"] = "CONFIGMAP"
                out.append(v)
        return out

    check(lk_volumes(ex_pod, ex_cm["metadata"]["name"]) == lk_volumes(app_pod, app_cm["metadata"]["name"]),
          "sidecar volumes equal to the chart's")

    # Gating wiring.
    check(ex_pod.get("readinessGates") == app_pod.get("readinessGates"), "readinessGates equal to the chart's")
    ex_probe = ex_app.get("readinessProbe")
    if mode == "readinessProbe":
        check(ex_probe == app_pod["containers"][0].get("readinessProbe"), "readinessProbe equal to the chart's")
        check(ex_probe["httpGet"]["path"] == "/readyz", "the app's readinessProbe is the sidecar's /readyz")
    else:
        check(ex_probe and ex_probe.get("httpGet", {}).get("path") != "/readyz", f"{mode}: the app keeps its own probe")
    (ex_svc,) = ex["Service"]
    app_svc = [s for s in app.get("Service", []) if not s["metadata"]["name"].endswith("-metrics")]
    holder = "lockkeeper.io/holder"
    check((ex_svc["spec"]["selector"].get(holder) == "true") == (mode == "label"),
          f"{mode}: Service selects the holder label only in label mode")
    for svc in app_svc:
        check(svc["spec"]["selector"].get(holder) == ex_svc["spec"]["selector"].get(holder),
              "Service holder selector equal to the chart's")
    check(ex_dep["spec"]["strategy"] == app_dep["spec"]["strategy"], "strategy equal to the chart's")

    # Service account, token and RBAC.
    for key in ("automountServiceAccountToken",):
        check(ex_pod.get(key) == app_pod.get(key), f"pod {key} equal to the chart's")
    check(("ServiceAccount" in ex) == ("ServiceAccount" in app), "ServiceAccount rendered iff the chart renders one")
    for objs, pod, label in ((ex, ex_pod, "example"), (app, app_pod, "chart")):
        for sa in objs.get("ServiceAccount", []):
            check(pod.get("serviceAccountName") == sa["metadata"]["name"], f"{label}: the pod uses the ServiceAccount")
            check(sa.get("automountServiceAccountToken") is False, f"{label}: ServiceAccount token not automounted")
    check(("Role" in ex) == ("Role" in app) and ("RoleBinding" in ex) == ("RoleBinding" in app),
          "Role and RoleBinding rendered iff the chart renders them")
    ex_rules = [r["rules"] for r in ex.get("Role", [])]
    app_rules = [r["rules"] for r in app.get("Role", [])]
    check(ex_rules == app_rules, f"Role rules equal to the chart's: {ex_rules} != {app_rules}")
    for objs, pod, label in ((ex, ex_pod, "example"), (app, app_pod, "chart")):
        roles = [r["metadata"]["name"] for r in objs.get("Role", [])]
        for rb in objs.get("RoleBinding", []):
            check(roles and rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": roles[0]},
                  f"{label}: RoleBinding binds the Role")
            check([(s["kind"], s["name"]) for s in rb["subjects"]] == [("ServiceAccount", pod.get("serviceAccountName"))],
                  f"{label}: RoleBinding subject is the pod's ServiceAccount")
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        check(kind not in ex, f"no {kind}")
    for o in ex_objs:
        check(o["metadata"].get("namespace"), f"{o['kind']} namespaced")


def exvalues(path, out):
    """The example's lockkeeper block, as a values file for charts/lockkeeper."""
    with open(out, "w") as f:
        yaml.safe_dump(yaml.safe_load(open(path))["lockkeeper"], f, sort_keys=False)


def libdefaults(lib_dir, app_dir):
    """The library's defaults and appVersion are the application chart's values and appVersion."""
    text = open(f"{lib_dir}/templates/_defaults.tpl").read()
    m = re.search(r'\{\{- define "lockkeeper-lib.defaults" -\}\}\n(.*?)\{\{- end \}\}', text, re.S)
    check(m is not None, "lockkeeper-lib.defaults found in _defaults.tpl")
    if m is None:
        return
    defaults = yaml.safe_load(m.group(1))
    values = yaml.safe_load(open(f"{app_dir}/values.yaml"))
    want = {"gating", "lock", "etcd", "kubernetes", "sidecar", "serviceAccount", "rbac"}
    check(set(defaults) == want, f"library defaults cover {sorted(want)}, got {sorted(defaults)}")
    for key in sorted(set(defaults) & want):
        check(defaults[key] == values.get(key),
              f"library default {key} equals {app_dir}/values.yaml: {defaults[key]} != {values.get(key)}")
    m = re.search(r'\{\{- define "lockkeeper-lib.appVersion" -\}\}\n(.*?)\n\{\{- end \}\}', text, re.S)
    lib_version = m.group(1).strip() if m else None
    lib_chart = yaml.safe_load(open(f"{lib_dir}/Chart.yaml"))
    app_chart = yaml.safe_load(open(f"{app_dir}/Chart.yaml"))
    check(lib_chart.get("type") == "library", "lockkeeper-lib is a library chart")
    check(lib_version == str(lib_chart["appVersion"]) == str(app_chart["appVersion"]),
          f"sidecar image tag default {lib_version} = library appVersion {lib_chart['appVersion']}"
          f" = chart appVersion {app_chart['appVersion']}")
    deps = {d["name"]: d for d in app_chart.get("dependencies", [])}
    check(deps.get("lockkeeper-lib", {}).get("version") == lib_chart["version"],
          "the chart depends on this version of lockkeeper-lib")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"manifest": manifest, "compose": compose, "config": config, "libdefaults": libdefaults,
     "example": example, "exvalues": exvalues,
     "etcdmanifest": etcdmanifest}[cmd](*args)
    for e in errors:
        print(f"  FAIL {e}")
    sys.exit(1 if errors else 0)
PYTHON

validate() { # validate FILE LABEL: kubernetes-validate --strict for each version
  local file=$1 label=$2 v out
  for v in "${K8S_VERSIONS[@]}"; do
    # --quiet prints only problems; a kind without a schema is only a warning: fail on it too.
    if out=$("$KV" --strict --quiet -k "$v" "$file" 2>&1) && ! grep -q . <<<"$out"; then
      ok "$label: kubernetes-validate --strict (Kubernetes $v)"
    else
      bad "$label: kubernetes-validate --strict (Kubernetes $v)"
      printf '%s\n' "$out" | sed 's/^/       /'
    fi
  done
}

# === 0: the library chart, vendored into the charts that use it ===
step "library chart $LIB_CHART"
# A `file://` dependency: packaged from the working tree on every run, so what is checked below is
# the library as it is now (Chart.lock pins only name and version).
for chart in "$CHART" "$EXAMPLE_CHART"; do
  if out=$("$HELM" dependency build "$chart" 2>&1); then
    ok "$chart: helm dependency build (vendors $LIB_CHART)"
  else
    bad "$chart: helm dependency build"
    printf '%s\n' "$out" | sed 's/^/       /'
  fi
done
if out=$("$HELM" lint --strict "$LIB_CHART" 2>&1); then
  ok "$LIB_CHART: helm lint --strict"
else
  bad "$LIB_CHART: helm lint --strict"
  printf '%s\n' "$out" | sed 's/^/       /'
fi
if "$PY" "$WORK/check.py" libdefaults "$LIB_CHART" "$CHART"; then
  ok "$LIB_CHART: defaults and appVersion equal $CHART's values and appVersion"
else
  bad "$LIB_CHART: defaults and appVersion equal $CHART's"
fi

# === 1-3: lint, render, validate, per case ===
cat >"$WORK/full.yaml" <<'EOF'
replicaCount: 3
gating: {mode: label}
lock: {name: billing, ttl: 15s, renewInterval: 5s, safetyMargin: 3s, lockDelay: 2s}
etcd:
  endpoints: [https://etcd-a:2379, https://etcd-b:2379, https://etcd-c:2379]
  connectTimeout: 5s
  requestTimeout: 3s
  tls: {enabled: true, secretName: etcd-client-tls}
  auth: {enabled: true, username: lockkeeper, secretName: etcd-auth}
sidecar:
  logFormat: text
  extraArgs: ["--audit-log", "/dev/stdout"]
  extraEnv: [{name: RUST_BACKTRACE, value: "1"}]
app:
  image: {repository: registry.invalid/team/billing, tag: "2.4.1"}
  command: ["/billing"]
  args: ["serve"]
  ports: [{name: http, containerPort: 8080}]
  readinessProbe: {httpGet: {path: /healthz, port: http}}
  livenessProbe: {httpGet: {path: /healthz, port: http}}
  resources: {requests: {cpu: 100m, memory: 128Mi}}
service: {type: ClusterIP, ports: [{name: http, port: 80, targetPort: http}]}
metrics:
  serviceMonitor: {enabled: true, labels: {release: prometheus}}
  podMonitor: {enabled: true}
prometheusRule: {enabled: true, labels: {release: prometheus}}
podAnnotations: {team: billing}
podLabels: {tier: backend}
priorityClassName: high
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: billing, effect: NoSchedule}]
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector: {matchLabels: {app.kubernetes.io/name: lockkeeper}}
EOF
cat >"$WORK/gate-recreate.yaml" <<'EOF'
gating: {mode: readinessGate}
strategy: {type: Recreate}
app:
  readinessProbe: {exec: {command: ["true"]}}
EOF

# name | mode | native | kube | events | helm arguments
CASES=(
  "default|readinessProbe|true|true|true|"
  "readinessGate|readinessGate|true|true|true|--set gating.mode=readinessGate"
  "label|label|true|true|true|--set gating.mode=label"
  "readinessProbe-plain|readinessProbe|false|true|true|--set sidecar.native=false"
  "readinessGate-plain|readinessGate|false|true|true|--set gating.mode=readinessGate --set sidecar.native=false"
  "label-plain|label|false|true|true|--set gating.mode=label --set sidecar.native=false"
  "integration-off|readinessProbe|true|false|true|--set kubernetes.integration=off"
  "events-off|readinessProbe|true|false|false|--set kubernetes.events=false"
  "readinessGate-no-events|readinessGate|true|true|false|--set gating.mode=readinessGate --set kubernetes.events=false"
  "readinessGate-recreate|readinessGate|true|true|true|-f $WORK/gate-recreate.yaml"
  "everything-on|label|true|true|true|-f $WORK/full.yaml"
)
for entry in "${CASES[@]}"; do
  IFS='|' read -r name mode native kube events args <<<"$entry"
  step "chart: $name ($mode, native=$native, kubernetes=$kube, events=$events)"
  read -r -a argv <<<"$args"
  if out=$("$HELM" lint --strict "$CHART" "${argv[@]}" 2>&1); then
    ok "$name: helm lint --strict"
  else
    bad "$name: helm lint --strict"
    printf '%s\n' "$out" | sed 's/^/       /'
  fi
  rendered="$WORK/$name.yaml"
  if ! "$HELM" template demo "$CHART" --namespace demo "${argv[@]}" >"$rendered" 2>"$WORK/err"; then
    bad "$name: helm template"
    sed 's/^/       /' "$WORK/err"
    continue
  fi
  ok "$name: helm template ($(grep -c '^kind:' "$rendered") objects)"
  if "$PY" "$WORK/check.py" manifest "$name" "$rendered" "$WORK/$name.k8s.yaml" "$mode" "$native" "$kube" "$events"; then
    ok "$name: mode, RBAC, rollout and security assertions"
  else
    bad "$name: mode, RBAC, rollout and security assertions"
  fi
  validate "$WORK/$name.k8s.yaml" "$name"
  if [ -f "$WORK/$name.k8s.yaml.rules.yaml" ]; then
    if ! command -v promtool >/dev/null 2>&1; then
      echo "  note: no promtool (Debian package prometheus); PrometheusRule expressions not parsed"
    elif out=$(promtool check rules "$WORK/$name.k8s.yaml.rules.yaml" 2>&1); then
      ok "$name: promtool check rules (the PrometheusRule's alerts)"
    else
      bad "$name: promtool check rules"
      printf '%s\n' "$out" | sed 's/^/       /'
    fi
  fi
done

# === 3b: the sidecar accepts every generated config ===
step "the sidecar binary accepts each rendered config.yaml"
BIN=${LOCKKEEPER_BIN:-}
if [ -z "$BIN" ] && command -v cargo >/dev/null 2>&1; then
  if cargo build --quiet --bin lockkeeper 2>"$WORK/cargo.err"; then
    BIN=target/debug/lockkeeper
  else
    bad "cargo build --bin lockkeeper"
    sed 's/^/       /' "$WORK/cargo.err" | tail -n 20
  fi
fi
if [ -n "$BIN" ]; then
  # Secrets the config points at (TLS files, password file), as mounted in the pod.
  mkdir -p "$WORK/root/etc/lockkeeper/etcd-tls" "$WORK/root/etc/lockkeeper/etcd-auth"
  touch "$WORK/root/etc/lockkeeper/etcd-tls/"{ca.crt,tls.crt,tls.key}
  echo secret >"$WORK/root/etc/lockkeeper/etcd-auth/password"
  for entry in "${CASES[@]}"; do
    IFS='|' read -r name _ <<<"$entry"
    [ -f "$WORK/$name.yaml" ] || continue
    "$PY" "$WORK/check.py" config "$WORK/$name.yaml" "$WORK/$name.config.yaml" "$WORK/root"
    # Valid configuration: it starts (and keeps retrying etcd) until the timeout stops it.
    # Invalid: exit code 2 at once, naming the field.
    rc=0
    POD_NAME=demo-0 POD_NAMESPACE=demo LOCKKEEPER_LISTEN=127.0.0.1:0 \
      timeout 2 "$BIN" run --config "$WORK/$name.config.yaml" >"$WORK/$name.run.log" 2>&1 || rc=$?
    if [ "$rc" -eq 124 ]; then
      ok "$name: lockkeeper run --config accepts the generated config"
    else
      bad "$name: lockkeeper run --config exited $rc"
      sed 's/^/       /' "$WORK/$name.run.log" | head -n 10
    fi
  done
else
  echo "  note: no cargo and no LOCKKEEPER_BIN; generated configs not run through the binary"
fi

# === 4: what must be rejected ===
step "chart: bad values are rejected"
# "ARGS|text the error must contain". The schema is enforced by `helm lint` (and install);
# template `fail`s only by `helm template`/install (lint runs templates in a lenient mode).
SCHEMA_REJECT=(
  "--set gating.mode=bogus|gating/mode"
  "--set replicaCount=0|replicaCount"
  "--set kubernetes.integration=maybe|kubernetes/integration"
  "--set lock.ttl=ten|lock/ttl"
  "--set etcd.endpoints[0]=etcd-0:2379|etcd/endpoints/0"
  "--set sidecar.logFormat=xml|sidecar/logFormat"
  "--set gating.conditionType=not/a/valid/type|gating/conditionType"
  "--set app.image.repository=|app/image/repository"
  "--set unknownKey=1|unknownKey"
)
TEMPLATE_REJECT=(
  "--set gating.mode=label --set kubernetes.integration=off|needs the Kubernetes integration"
  "--set gating.mode=readinessGate --set strategy.type=RollingUpdate --set strategy.rollingUpdate.maxUnavailable=1|deadlocks"
  "--set strategy.rollingUpdate.maxSurge=1|deadlocks"
  "--set app.readinessProbe.tcpSocket.port=8080|app.readinessProbe cannot be set"
  "--set etcd.tls.enabled=true|etcd.tls.secretName"
  "--set etcd.auth.enabled=true|etcd.auth.username"
  "--kube-version 1.28.0|native sidecars"
)
reject() { # reject COMMAND ARGS EXPECT
  local cmd=$1 args=$2 expect=$3 out argv
  read -r -a argv <<<"$args"
  if [ "$cmd" = lint ]; then
    out=$("$HELM" lint "$CHART" "${argv[@]}" 2>&1) && { bad "helm lint $args: accepted, must fail"; return; }
  else
    out=$("$HELM" template demo "$CHART" "${argv[@]}" 2>&1 >/dev/null) && { bad "helm template $args: accepted, must fail"; return; }
  fi
  if grep -qF -- "$expect" <<<"$out"; then
    ok "helm $cmd $args: rejected ($expect)"
  else
    bad "helm $cmd $args: failed, but without mentioning '$expect'"
    printf '%s\n' "$out" | sed 's/^/       /'
  fi
}
for entry in "${SCHEMA_REJECT[@]}"; do
  IFS='|' read -r args expect <<<"$entry"
  reject lint "$args" "$expect"
done
for entry in "${TEMPLATE_REJECT[@]}"; do
  IFS='|' read -r args expect <<<"$entry"
  reject template "$args" "$expect"
done
if "$HELM" template demo "$CHART" --set sidecar.native=false --kube-version 1.28.0 >/dev/null 2>&1; then
  ok "a plain sidecar renders for Kubernetes 1.28"
else
  bad "a plain sidecar must render for Kubernetes 1.28"
fi

# === 5: the committed examples and plain manifests ===
step "deploy/: committed rendered examples match helm template"
for mode in "${EXAMPLE_MODES[@]}"; do
  target="deploy/example/$mode.yaml"
  fresh="$WORK/example-$mode.yaml"
  {
    echo "# Rendered from charts/lockkeeper by scripts/check-chart.sh --update; do not edit."
    echo "#   helm template demo charts/lockkeeper --namespace default \\"
    echo "#     -f deploy/example/values.yaml --set gating.mode=$mode"
    "$HELM" template demo "$CHART" --namespace default -f deploy/example/values.yaml --set "gating.mode=$mode"
  } >"$fresh"
  if [ "$UPDATE" -eq 1 ]; then
    cp "$fresh" "$target"
    ok "$target rewritten"
  elif [ ! -f "$target" ]; then
    bad "$target missing (run scripts/check-chart.sh --update)"
  elif diff -u "$target" "$fresh" >"$WORK/diff"; then
    ok "$target matches helm template"
  else
    bad "$target drifted from helm template (run scripts/check-chart.sh --update):"
    sed 's/^/       /' "$WORK/diff" | head -n 60
  fi
  validate "$target" "$target"
done
validate deploy/etcd.yaml deploy/etcd.yaml
if "$PY" "$WORK/check.py" etcdmanifest deploy/etcd.yaml docker-compose.yml; then
  ok "deploy/etcd.yaml: etcd's official image, the Compose file's tag, explicit command, no exec probes"
else
  bad "deploy/etcd.yaml: etcd's official image, explicit command, no exec probes"
fi

# === 6: the example application chart (examples/my-app) ===
# Each case: name | sidecar variant | lockkeeper values (--set keys relative to the lockkeeper
# block). The example gets them under `lockkeeper.`, charts/lockkeeper gets the example's
# lockkeeper block as a values file plus the same keys at the top level; the two renders are then
# compared.
"$PY" "$WORK/check.py" exvalues "$EXAMPLE_CHART/values.yaml" "$WORK/example-lockkeeper.yaml"
EX_CASES=(
  "readinessProbe|true|gating.mode=readinessProbe"
  "readinessGate|true|gating.mode=readinessGate"
  "label|true|gating.mode=label"
  "readinessProbe-plain|false|gating.mode=readinessProbe sidecar.native=false"
  "readinessGate-plain|false|gating.mode=readinessGate sidecar.native=false"
  "label-plain|false|gating.mode=label sidecar.native=false"
  "readinessProbe-integration-off|true|gating.mode=readinessProbe kubernetes.integration=off"
  "readinessGate-no-events|true|gating.mode=readinessGate kubernetes.events=false"
  "label-tls-auth|true|gating.mode=label etcd.tls.enabled=true etcd.tls.secretName=etcd-tls etcd.auth.enabled=true etcd.auth.username=app etcd.auth.secretName=etcd-auth sidecar.extraArgs[0]=--audit-log"
)
for entry in "${EX_CASES[@]}"; do
  IFS='|' read -r name native sets <<<"$entry"
  mode=${sets%% *}
  mode=${mode#gating.mode=}
  step "example chart: $name"
  ex_argv=()
  app_argv=(-f "$WORK/example-lockkeeper.yaml")
  read -r -a kvs <<<"$sets"
  for kv in "${kvs[@]}"; do
    ex_argv+=(--set "lockkeeper.$kv")
    app_argv+=(--set "$kv")
  done
  if out=$("$HELM" lint --strict "$EXAMPLE_CHART" "${ex_argv[@]}" 2>&1); then
    ok "example $name: helm lint --strict"
  else
    bad "example $name: helm lint --strict"
    printf '%s\n' "$out" | sed 's/^/       /'
  fi
  ex_out="$WORK/example-chart-$name.yaml"
  app_out="$WORK/example-chart-$name.app.yaml"
  if ! "$HELM" template demo "$EXAMPLE_CHART" --namespace demo "${ex_argv[@]}" >"$ex_out" 2>"$WORK/err"; then
    bad "example $name: helm template"
    sed 's/^/       /' "$WORK/err"
    continue
  fi
  ok "example $name: helm template ($(grep -c '^kind:' "$ex_out") objects)"
  if ! "$HELM" template demo "$CHART" --namespace demo "${app_argv[@]}" >"$app_out" 2>"$WORK/err"; then
    bad "example $name: helm template $CHART with the same lockkeeper values"
    sed 's/^/       /' "$WORK/err"
    continue
  fi
  if "$PY" "$WORK/check.py" example "$ex_out" "$app_out" "$mode" "$native"; then
    ok "example $name: sidecar, gating wiring and RBAC equal $CHART's"
  else
    bad "example $name: sidecar, gating wiring and RBAC equal $CHART's"
  fi
  validate "$ex_out" "example $name"
done

step "example chart: what lockkeeper-lib refuses"
EX_REJECT=(
  "--set lockkeeper.gating.mode=bogus|gating.mode must be readinessProbe, readinessGate or label"
  "--set lockkeeper.gating.mode=label --set lockkeeper.kubernetes.integration=off|needs the Kubernetes integration"
  "--set strategy.rollingUpdate.maxUnavailable=1|deadlocks"
  "--set lockkeeper.etcd.tls.enabled=true|etcd.tls.secretName"
  "--set lockkeeper.etcd.auth.enabled=true|etcd.auth.username"
  "--kube-version 1.28.0|native sidecars"
  "--set lockkeeper=oops|must be a map"
)
for entry in "${EX_REJECT[@]}"; do
  IFS='|' read -r args expect <<<"$entry"
  read -r -a argv <<<"$args"
  if out=$("$HELM" template demo "$EXAMPLE_CHART" "${argv[@]}" 2>&1 >/dev/null); then
    bad "example: helm template $args: accepted, must fail"
  elif grep -qF -- "$expect" <<<"$out"; then
    ok "example: helm template $args: rejected ($expect)"
  else
    bad "example: helm template $args: failed, but without mentioning '$expect'"
    printf '%s\n' "$out" | sed 's/^/       /'
  fi
done
if "$HELM" template demo "$EXAMPLE_CHART" --set lockkeeper.sidecar.native=false --kube-version 1.28.0 >/dev/null 2>&1; then
  ok "example: a plain sidecar renders for Kubernetes 1.28"
else
  bad "example: a plain sidecar must render for Kubernetes 1.28"
fi
# Without any lockkeeper values the library's defaults apply (the lock is named after the objects).
if out=$("$HELM" template demo "$EXAMPLE_CHART" --set lockkeeper=null 2>&1) &&
  grep -q 'name: demo-my-app-lockkeeper$' <<<"$out"; then
  ok "example: renders with no lockkeeper values at all (library defaults)"
else
  bad "example: must render with no lockkeeper values (library defaults)"
  printf '%s\n' "$out" | tail -n 5 | sed 's/^/       /'
fi

# === 7: docker-compose.yml ===
step "docker-compose.yml"
if "$PY" "$WORK/check.py" compose docker-compose.yml "$COMPOSE_SCHEMA"; then
  ok "docker-compose.yml: Compose schema and structure (3 official etcd, sidecars, one gated app each)"
else
  bad "docker-compose.yml: Compose schema and structure"
fi
if docker compose version >/dev/null 2>&1; then
  if docker compose -f docker-compose.yml config --quiet; then
    ok "docker compose config"
  else
    bad "docker compose config"
  fi
else
  echo "  note: no Docker Compose plugin here; schema and structural checks only"
fi

echo
echo "check-chart: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
