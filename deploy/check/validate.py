#!/usr/bin/env python3
"""Static and binary-backed checks of everything under deploy/ that no Docker engine or
Kubernetes cluster is needed for.

    python3 deploy/check/validate.py --binary target/release/distillguard [--mutants] [--promtool promtool]
    python3 deploy/check/validate.py --write-prometheusrule      # regenerate k8s/base/prometheusrule.yaml

Checks, each failing with a message that names the file and the mismatch:
  * every YAML, JSON and TOML file under deploy/ parses; every file of a kustomization folder
    under deploy/k8s is listed in it;
  * the two deployable kustomizations, deploy/k8s (the single Deployment, kafka.role "all")
    and deploy/k8s/staged (an "account" Deployment, a "link" StatefulSet of link shards and
    a "cluster" Deployment), are rendered (resources only; cross-checked with `kubectl
    kustomize` when kubectl is on PATH) and each is checked as a whole: one workload per
    expected role and nothing else; core objects against the
    Kubernetes schemas (kubernetes-validate, strict); per Deployment, the ConfigMap's TOML
    with its DISTILLGUARD__ environment and args passes `distillguard config --check`, every
    DISTILLGUARD__X__Y names a key of `distillguard config --print-default`, containerPort,
    probes, scrape annotations, Service and PodMonitor use service.metrics_addr's port, the
    --config path is where the ConfigMap is mounted, the grace period exceeds
    service.shutdown_deadline_secs, the memory request covers the state its role keeps at
    the caps; Deployment selectors do not overlap, every pod is selected by exactly one PDB
    (one that a drain can satisfy), a Service and the PodMonitor (job "distillguard");
  * the staged topology: every stage routes by the same kafka.link_shards; link shards run
    as a StatefulSet of exactly kafka.link_shards pods, each taking kafka.link_shard from its
    ordinal; a single link Deployment (kafka.link_shards 1) and the cluster Deployment run
    exactly one replica with the Recreate strategy; KEDA ScaledObjects (no bundled schema) are checked field by field: the target
    is a Deployment of the same kustomization, one ScaledObject per Deployment, a scaled
    Deployment sets no replicas of its own (or exactly the pinned count), minReplicaCount
    >= 1, the link's pinned at min = max = 1, the kafka trigger's bootstrapServers,
    consumerGroup, topic and offsetResetPolicy are those the target's configuration consumes
    (GROUP-link and kafka.observations_topic for link), lagThreshold is a positive integer
    string, and the HPA that KEDA derives validates against the Kubernetes schema;
  * compose: the single service and the staged profile's account, link shard and cluster
    services pass `distillguard config --check` with their environment and run the role their
    name says; the staged services are in profile "staged" only, one topology (consumer
    group, alerts topic, kafka.link_shards) apart from the single service's, every link shard
    once and one replica of each link shard and of the cluster; kafka-init creates every
    topic they use, each observations topic with at least the input's partitions and the
    links topic with one per shard; Prometheus's distillguard job scrapes each of them;
  * every alert has summary, description, a runbook_url whose anchor is a heading of
    deploy/RUNBOOK.md, and unit tests where it fires and where it stays quiet; with
    --mutants, each alert's tests must fail when its expression can never fire; every role
    a rule or panel selects is one distillguard accepts;
  * k8s/base/prometheusrule.yaml holds exactly the rules of prometheus/alerts.yml;
  * the dashboard's panels have units, stay in the grid, use the $datasource and $instance
    variables, and it has its rows (Stages among them).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("validate.py needs PyYAML: python3 -m pip install pyyaml (ci.sh sets up a venv with it)")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ALERTS = DEPLOY / "prometheus/alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus/alerts_test.yml"
RUNBOOK = DEPLOY / "RUNBOOK.md"
DASHBOARD = DEPLOY / "grafana/dashboards/distillguard.json"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
PROMRULE = K8S / "base/prometheusrule.yaml"
ENV_PREFIX = "DISTILLGUARD__"

# The deployable kustomizations and the role of each of their Deployments (kafka.role), one
# Deployment per role.
TOPOLOGIES = {
    K8S: ("all",),
    K8S / "staged": ("account", "cluster", "link"),
}
# Compose services that run `distillguard run`, and their roles; the staged ones only in this
# profile.
COMPOSE_ROLES = {"distillguard": "all", "distillguard-account": "account",
                 "distillguard-link-0": "link", "distillguard-link-1": "link",
                 "distillguard-cluster": "cluster"}
STAGED_PROFILE = "staged"
KEDA_API = "keda.sh/v1alpha1"

BENCHES = ROOT / "benches" / "README.md"


def measured_bytes(row: str) -> int:
    """A figure in bytes from a table row of benches/README.md that starts with `row`: the
    first "N B" or "N-M B" after it (a range counts as its upper end)."""
    m = re.search(r"^\| " + row + r"[^|\n]*\|(?:[^|\n]*\|)*? ([\d,]+)(?:-([\d,]+))? B\b",
                  BENCHES.read_text(), re.M)
    if not m:
        sys.exit(f"validate: no row '{row}' with a figure in bytes in {BENCHES}")
    return int((m.group(2) or m.group(1)).replace(",", ""))


# Measured memory (benches/README.md): bytes per tracked account and per attribute value, by
# role ("Speed and memory" for the single engine, "Memory of the stages" for the stages: an
# account engine keeps no attribute index, a link engine a shadow record per account and the
# index); the rest of the process (baseline, librdkafka's prefetch queue) and the
# pending-delivery buffer are on top.
BYTES_PER_ENTRY = {   # role -> (per account, per attribute value)
    "all": (measured_bytes(r"memory per tracked account \|"),
            measured_bytes(r"memory per attribute value \|")),
    "account": (measured_bytes(r"`account` \| per tracked account"), 0),
    "link": (measured_bytes(r"`link` \| per shadow account"),
             measured_bytes(r"`link` \| per attribute value")),
    "cluster": (measured_bytes(r"`cluster` \| per account"), 0),
}
# The downward-API field a link shard's pod takes its shard from (its StatefulSet ordinal).
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
BASELINE_BYTES = 330 * 2**20 + 64 * 2**20
BYTES_PER_PENDING_DELIVERY = 1536

errors: list[str] = []


def fail(msg: str) -> None:
    errors.append(msg)


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


# ------------------------------------------------------------------------------ parsing

def check_parse() -> None:
    for p in sorted(DEPLOY.rglob("*")):
        if not p.is_file():
            continue
        try:
            if p.suffix in (".yml", ".yaml"):
                list(yaml.safe_load_all(p.read_text()))
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".toml":
                tomllib.loads(p.read_text())
        except Exception as e:  # noqa: BLE001 - any parse error is the finding
            fail(f"{rel(p)}: does not parse: {e}")


# ------------------------------------------------------------------------------ config

class Binary:
    def __init__(self, path: Path):
        self.path = path
        out = subprocess.run([str(path), "config", "--print-default"],
                             capture_output=True, text=True, check=True).stdout
        self.defaults = tomllib.loads(out)

    def check(self, toml_text: str, env: dict[str, str], where: str) -> bool:
        """`distillguard config --check` on the text with exactly this DISTILLGUARD__ env."""
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(toml_text)
        base = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        base.update(RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")  # the message, not a trace
        try:
            res = subprocess.run([str(self.path), "config", "--check", f.name],
                                 env={**base, **env}, capture_output=True, text=True)
        finally:
            os.unlink(f.name)
        if res.returncode != 0:
            fail(f"{where}: `distillguard config --check` rejects it: "
                 f"{(res.stderr or res.stdout).strip()}")
        return res.returncode == 0

    def env_key_exists(self, var: str) -> bool:
        path = [p.lower() for p in var[len(ENV_PREFIX):].split("__")]
        if len(path) == 3 and path[0] == "kafka" and path[1].endswith("properties"):
            return isinstance(self.defaults.get("kafka", {}).get(path[1]), dict)
        return len(path) == 2 and path[1] in self.defaults.get(path[0], {})


def effective(defaults: dict, toml_text: str, env: dict[str, str]) -> dict:
    """defaults < file < DISTILLGUARD__SECTION__KEY (values read as TOML, else strings), for the
    scalar keys these checks compare."""
    cfg = {s: dict(v) if isinstance(v, dict) else v for s, v in defaults.items()}
    for section, table in tomllib.loads(toml_text).items():
        if isinstance(table, dict):
            cfg.setdefault(section, {}).update(table)
    for var, raw in env.items():
        path = [p.lower() for p in var[len(ENV_PREFIX):].split("__")]
        if len(path) != 2:
            continue
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        cfg.setdefault(path[0], {})[path[1]] = value
    return cfg


def flag_env(argv: list[str]) -> dict[str, str]:
    """The flags of `distillguard run ...` as the DISTILLGUARD__ variables they override:
    --metrics-addr is service.metrics_addr, every other one a [kafka] key (--role is
    kafka.role, --group-id kafka.group_id, ...). Flags beat the environment."""
    out = {}
    for flag, value in zip(argv, argv[1:]):
        if flag.startswith("--") and flag != "--config":
            key = flag[2:].replace("-", "_").upper()
            out[ENV_PREFIX + ("SERVICE__" if key == "METRICS_ADDR" else "KAFKA__") + key] = value
    return out


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def check_env_names(env: dict[str, str], binary: Binary, where: str) -> None:
    for var in env:
        if var.startswith(ENV_PREFIX) and not binary.env_key_exists(var):
            fail(f"{where}: {var} names no key of `distillguard config --print-default`")


def consumed(cfg: dict) -> tuple[str, str]:
    """(consumer group, topic) an instance consumes in its role (src/kafka/mod.rs, for_role): a
    link instance reads kafka.observations_topic in group GROUP-link, link shard S
    OBSERVATIONS-S in GROUP-link-S; a cluster instance kafka.links_topic in GROUP-cluster."""
    k = cfg["kafka"]
    if k["role"] == "link" and k["link_shards"] > 1:
        s = k["link_shard"]
        return f"{k['group_id']}-link-{s}", f"{k['observations_topic']}-{s}"
    if k["role"] == "link":
        return k["group_id"] + "-link", k["observations_topic"]
    if k["role"] == "cluster":
        return k["group_id"] + "-cluster", k["links_topic"]
    return k["group_id"], k["input_topic"]


def observation_topics(k: dict) -> list[str]:
    """The observations topics an account instance writes: kafka.observations_topic, or one
    per link shard (OBSERVATIONS-S)."""
    if k["link_shards"] > 1:
        return [f"{k['observations_topic']}-{s}" for s in range(k["link_shards"])]
    return [k["observations_topic"]]


def memory_needed(cfg: dict) -> int:
    """Bytes an instance holds at the state caps, by role: accounts and attribute values at
    the role's measured bytes per entry, pending deliveries, the baseline, and the
    prompt-copies sketch where harvests are judged (all, account)."""
    role = cfg["kafka"]["role"]
    per_account, per_value = BYTES_PER_ENTRY[role]
    sketch = 0 if role in ("link", "cluster") else cfg["harvest"]["copies_sketch_max_mib"] * 2**20
    return (cfg["engine"]["max_accounts"] * per_account
            + cfg["engine"]["max_attribute_values"] * per_value
            + cfg["service"]["max_pending_deliveries"] * BYTES_PER_PENDING_DELIVERY
            + sketch + BASELINE_BYTES)


# ------------------------------------------------------------------------------ Kubernetes

def kustomization_dirs() -> list[Path]:
    return sorted({p.parent for p in K8S.rglob("*.yaml")})


def check_kustomizations() -> None:
    """Every folder of manifests is a kustomization that lists each of its files, and lists
    only what exists."""
    for d in kustomization_dirs():
        kf = d / "kustomization.yaml"
        if not kf.exists():
            fail(f"{rel(d)}: manifests without a kustomization.yaml")
            continue
        listed = yaml.safe_load(kf.read_text()).get("resources", [])
        for r in listed:
            if not (d / r).exists():
                fail(f"{rel(kf)}: resource {r} does not exist")
        for p in sorted(d.glob("*.yaml")):
            if p.name != "kustomization.yaml" and p.name not in listed:
                fail(f"{rel(kf)}: {p.name} is not listed")


def render(kdir: Path) -> list[dict]:
    """The objects `kubectl kustomize kdir` makes, for the subset of kustomize these
    manifests use: resources (files, and folders that are kustomizations), nothing else."""
    kf = kdir / "kustomization.yaml"
    kust = yaml.safe_load(kf.read_text())
    extra = set(kust) - {"apiVersion", "kind", "resources"}
    if extra:
        fail(f"{rel(kf)}: uses {sorted(extra)}, which validate.py's renderer does not model: "
             f"extend render() so that the checks see what kubectl applies")
    objs: list[dict] = []
    for r in kust.get("resources", []):
        path = (kdir / r).resolve()
        if path.is_dir():
            objs += render(path)
        elif path.is_file():
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    doc["__file"] = rel(path)
                    objs.append(doc)
    seen: dict[tuple, str] = {}
    for o in objs:
        key = (o["kind"], o["metadata"]["name"])
        if key in seen:
            fail(f"{rel(kdir)}: {key[0]} {key[1]} twice ({seen[key]}, {o['__file']})")
        seen[key] = o["__file"]
    return objs


def plain(o: dict) -> dict:
    return {k: v for k, v in o.items() if k != "__file"}


def check_kubectl_agrees(kdir: Path, objs: list[dict]) -> None:
    """With kubectl on PATH, its kustomize must render exactly what render() did."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print(f"validate: note: no kubectl on PATH: {rel(kdir)} rendered by validate.py alone")
        return
    res = subprocess.run([kubectl, "kustomize", str(kdir)], capture_output=True, text=True)
    if res.returncode != 0:
        fail(f"{rel(kdir)}: `kubectl kustomize` fails: {res.stderr.strip()}")
        return
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(res.stdout) if o}
    mine = {(o["kind"], o["metadata"]["name"]): plain(o) for o in objs}
    if set(theirs) != set(mine):
        fail(f"{rel(kdir)}: `kubectl kustomize` makes {sorted(theirs)}, validate.py {sorted(mine)}")
    for key in set(theirs) & set(mine):
        if theirs[key] != mine[key]:
            fail(f"{rel(kdir)}: `kubectl kustomize` renders {key[0]} {key[1]} differently")


def check_k8s_schema(obj: dict, where: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        fail("kubernetes-validate is not installed: pip install kubernetes-validate (ci.sh does)")
        return
    version = kubernetes_validate.latest_version()
    try:
        kubernetes_validate.validate(plain(obj), version, strict=True)
    except kubernetes_validate.ValidationError as e:
        fail(f"{where}: {obj['kind']} is not valid Kubernetes {version}: {e.message} "
             f"at {'/'.join(map(str, e.path))}")


def quantity_bytes(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(q))
    if not m:
        raise ValueError(f"memory quantity {q!r}")
    return int(float(m.group(1)) * units.get(m.group(2) or "", 1))


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def match_labels(obj: dict) -> dict:
    sel = obj["spec"]["selector"]
    if "matchExpressions" in sel:
        fail(f"{obj['__file']}: {obj['kind']} {obj['metadata']['name']}: matchExpressions are "
             f"not modelled by validate.py")
    return sel.get("matchLabels", {})


def pod_labels(dep: dict) -> dict:
    return dep["spec"]["template"]["metadata"].get("labels", {})


def check_deployment(dep: dict, cm: dict, binary: Binary | None) -> dict | None:
    """One Deployment against the ConfigMap it mounts. Returns its effective configuration
    (with its environment and flags), or None if it cannot be worked out."""
    where = f"{dep['__file']} ({dep['metadata']['name']})"
    pod = dep["spec"]["template"]
    labels = pod_labels(dep)
    c = pod["spec"]["containers"][0]

    if not selects(match_labels(dep), labels):
        fail(f"{where}: selector {dep['spec']['selector']} does not match its pod labels {labels}")

    # The ConfigMap mount and the --config path.
    vol = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    mounts = [m for m in c.get("volumeMounts", []) if vol.get(m["name"], {}).get("configMap")]
    if not mounts:
        fail(f"{where}: the ConfigMap is not mounted")
        return None
    mount = mounts[0]
    cmv = vol[mount["name"]]["configMap"]
    if cmv["name"] != cm["metadata"]["name"]:
        fail(f"{where}: mounts ConfigMap {cmv['name']!r}, but {cm['__file']} defines {cm['metadata']['name']!r}")
    items = cmv.get("items") or [{"key": k, "path": k} for k in cm["data"]]
    files = {mount["mountPath"].rstrip("/") + "/" + it["path"]: it["key"] for it in items}
    args = c.get("args", [])
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        fail(f"{where}: args {args} give no --config")
        return None
    cfg_path = args[args.index("--config") + 1]
    if cfg_path not in files:
        fail(f"{where}: --config {cfg_path} is not a file of the mounted ConfigMap ({sorted(files)})")
        return None
    toml_text = cm["data"][files[cfg_path]]

    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == POD_INDEX:
            # A StatefulSet pod's ordinal: checked as the first pod's (check_topology holds
            # the others to the replica count).
            env[e["name"]] = "0"
        elif "valueFrom" in e:
            env[e["name"]] = "placeholder-from-" + next(iter(e["valueFrom"]))
    if binary is None:
        return None
    check_env_names(env, binary, where)
    dg_env = {**{k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}, **flag_env(args)}
    binary.check(toml_text, dg_env, f"{cm['__file']} (with the environment and args of {where})")
    cfg = effective(binary.defaults, toml_text, dg_env)
    port = port_of(cfg["service"]["metrics_addr"])

    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    if port not in ports.values():
        fail(f"{where}: no containerPort {port} (service.metrics_addr is {cfg['service']['metrics_addr']})")

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", None)):
        pr = c.get(probe)
        if pr is None:
            if probe != "startupProbe":
                fail(f"{where}: no {probe}")
            continue
        get = pr.get("httpGet", {})
        if path and get.get("path") != path:
            fail(f"{where}: {probe} path is {get.get('path')!r}, the service serves {path}")
        if get.get("path") not in ("/healthz", "/readyz"):
            fail(f"{where}: {probe} path {get.get('path')!r} is not an endpoint of the service")
        target = get.get("port")
        if (ports.get(target) if isinstance(target, str) else target) != port:
            fail(f"{where}: {probe} port {target!r} is not {port}")

    ann = pod["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(port) \
            or ann.get("prometheus.io/path") != "/metrics":
        fail(f"{where}: prometheus.io annotations {ann} do not point at :{port}/metrics")

    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    deadline = cfg["service"]["shutdown_deadline_secs"]
    if grace < deadline + 5:
        fail(f"{where}: terminationGracePeriodSeconds {grace} leaves no margin over "
             f"service.shutdown_deadline_secs {deadline}")

    res = c.get("resources", {})
    try:
        req = quantity_bytes(res["requests"]["memory"])
        lim = quantity_bytes(res["limits"]["memory"])
        state = memory_needed(cfg)
        if req < state:
            fail(f"{where}: memory request {res['requests']['memory']} is below the "
                 f"{state / 2**20:.0f} MiB that the configured caps need in role {cfg['kafka']['role']!r}")
        if lim < req:
            fail(f"{where}: memory limit below the request")
    except (KeyError, ValueError) as e:
        fail(f"{where}: memory requests/limits missing or unreadable: {e}")
    cfg["__port"] = port
    cfg["__ports"] = ports
    return cfg


def check_scaledobject(so: dict, deps: dict[str, dict], cfgs: dict[str, dict]) -> str | None:
    """A KEDA ScaledObject, field by field (no schema is bundled for it). Returns the name of
    the Deployment it scales."""
    name = so.get("metadata", {}).get("name")
    where = f"{so['__file']} (ScaledObject {name})"
    if so.get("apiVersion") != KEDA_API:
        fail(f"{where}: apiVersion {so.get('apiVersion')!r}, KEDA's is {KEDA_API}")
    spec = so.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    if ref.get("kind", "Deployment") != "Deployment" or ref.get("apiVersion", "apps/v1") != "apps/v1":
        fail(f"{where}: scaleTargetRef {ref} is not an apps/v1 Deployment")
        return None
    target = ref.get("name")
    if target not in deps:
        fail(f"{where}: scaleTargetRef.name {target!r} is no Deployment of this kustomization "
             f"({sorted(deps)})")
        return None
    dep, cfg = deps[target], cfgs.get(target)
    lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)   # KEDA's defaults
    if not all(isinstance(v, int) for v in (lo, hi)) or not 1 <= lo <= hi:
        fail(f"{where}: needs 1 <= minReplicaCount <= maxReplicaCount, has {lo}..{hi} (at zero, "
             f"the first record after an idle spell waits for a whole window rebuild)")
    if "replicas" in dep["spec"] and not dep["spec"]["replicas"] == lo == hi:
        fail(f"{dep['__file']}: {target} sets replicas {dep['spec']['replicas']} while ScaledObject {name} "
             f"scales it ({lo}..{hi}): every `kubectl apply` would reset the count (and rebalance the group)")
    triggers = spec.get("triggers") or []
    if not triggers:
        fail(f"{where}: no triggers")
    for t in triggers:
        md = t.get("metadata") or {}
        if not t.get("type") or not md:
            fail(f"{where}: a trigger needs a type and metadata: {t}")
            continue
        for k, v in md.items():
            if not isinstance(v, str):
                fail(f"{where}: trigger metadata {k}: {v!r} must be a string (KEDA reads a map of strings)")
        if t["type"] != "kafka" or cfg is None:
            continue
        group, topic = consumed(cfg)
        k = cfg["kafka"]
        want = {"bootstrapServers": k["brokers"], "consumerGroup": group, "topic": topic}
        for key, value in want.items():
            if md.get(key) != value:
                fail(f"{where}: kafka trigger {key} is {md.get(key)!r}, but {target} "
                     f"(role {k['role']}) uses {value!r}")
        if md.get("offsetResetPolicy", "latest") != k["auto_offset_reset"]:
            fail(f"{where}: offsetResetPolicy {md.get('offsetResetPolicy', 'latest')!r} differs from "
                 f"kafka.auto_offset_reset {k['auto_offset_reset']!r}")
        if not re.fullmatch(r"[1-9]\d*", str(md.get("lagThreshold", ""))):
            fail(f"{where}: lagThreshold {md.get('lagThreshold')!r} is not a positive integer")
        if md.get("allowIdleConsumers", "false") != "false":
            fail(f"{where}: allowIdleConsumers: instances beyond the partition count own nothing")
    # KEDA hands minReplicaCount, maxReplicaCount and advanced.horizontalPodAutoscalerConfig to
    # the HPA it makes: validate that HPA, plus the limits the API server enforces.
    behavior = ((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior")
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": f"keda-hpa-{name}"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                    "minReplicas": lo, "maxReplicas": hi,
                    "metrics": [{"type": "External", "external": {
                        "metric": {"name": "s0-kafka"},
                        "target": {"type": "AverageValue", "averageValue": "1"}}}]}}
    if behavior is not None:
        hpa["spec"]["behavior"] = behavior
        for direction, rules in behavior.items():
            w = rules.get("stabilizationWindowSeconds", 0)
            if not 0 <= w <= 3600:
                fail(f"{where}: {direction}.stabilizationWindowSeconds {w} is outside 0..3600")
            if rules.get("selectPolicy", "Max") not in ("Max", "Min", "Disabled"):
                fail(f"{where}: {direction}.selectPolicy {rules['selectPolicy']!r} is not Max, Min or Disabled")
            for pol in rules.get("policies", []):
                if pol.get("type") not in ("Pods", "Percent") or not pol.get("value", 0) > 0:
                    fail(f"{where}: {direction} policy {pol} needs type Pods or Percent and a value > 0")
                if not 0 < pol.get("periodSeconds", 0) <= 1800:
                    fail(f"{where}: {direction} policy periodSeconds {pol.get('periodSeconds')} "
                         f"is outside 1..1800")
    check_k8s_schema({**hpa, "__file": so["__file"]}, f"{where} (as the HPA KEDA makes)")
    return target


def check_topology(kdir: Path, roles: tuple[str, ...], binary: Binary | None) -> list[dict]:
    """One deployable kustomization as a whole. Returns its Deployments."""
    where = rel(kdir)
    objs = render(kdir)
    check_kubectl_agrees(kdir, objs)
    by_kind: dict[str, list[dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
        if not o["apiVersion"].startswith(("monitoring.coreos.com", "keda.sh")):
            check_k8s_schema(o, o["__file"])
    for kind in ("ConfigMap", "PodMonitor", "PrometheusRule"):
        if len(by_kind.get(kind, [])) != 1:
            fail(f"{where}: {len(by_kind.get(kind, []))} {kind} objects, expected one")
    # Workloads: Deployments, and StatefulSets (the link shards, one pod per shard).
    deps = {d["metadata"]["name"]: d
            for d in by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])}
    if not deps or len(by_kind.get("ConfigMap", [])) != 1:
        fail(f"{where}: no Deployment or no single ConfigMap to check")
        return list(deps.values())
    cm = by_kind["ConfigMap"][0]
    cfgs = {n: c for n, d in deps.items() if (c := check_deployment(d, cm, binary)) is not None}

    # Every stage routes by the same link shard count.
    counts = {n: c["kafka"]["link_shards"] for n, c in cfgs.items() if c["kafka"]["role"] != "all"}
    if len(set(counts.values())) > 1:
        fail(f"{where}: the stages disagree on kafka.link_shards: {counts}")

    # The roles: one workload each, and nothing else.
    if binary is not None and len(cfgs) == len(deps):
        got = sorted(c["kafka"]["role"] for c in cfgs.values())
        if got != sorted(roles):
            fail(f"{where}: its Deployments run roles {got}, expected one each of {sorted(roles)}")
        for n, c in cfgs.items():
            comp = pod_labels(deps[n]).get("app.kubernetes.io/component")
            if len(deps) > 1 and comp != c["kafka"]["role"]:
                fail(f"{deps[n]['__file']}: {n} runs role {c['kafka']['role']!r} but its pods' "
                     f"app.kubernetes.io/component is {comp!r} (the stages' selectors rely on it)")

    # Selectors: no Deployment adopts another's pods; one PDB per pod, one a drain can satisfy;
    # a Service and the PodMonitor (job "distillguard") for every pod.
    pdbs = by_kind.get("PodDisruptionBudget", [])
    for n, d in deps.items():
        labels = pod_labels(d)
        for m, other in deps.items():
            if m != n and selects(match_labels(other), labels):
                fail(f"{other['__file']}: {m}'s selector also selects {n}'s pods")
        mine = [p for p in pdbs if selects(match_labels(p), labels)]
        if len(mine) != 1:
            fail(f"{where}: {n}'s pods are selected by {len(mine)} PodDisruptionBudgets "
                 f"{[p['metadata']['name'] for p in mine]}; need one (the eviction API refuses two)")
        for p in mine:
            ps, replicas = p["spec"], d["spec"].get("replicas")
            if ps.get("maxUnavailable") in (0, "0%") or ps.get("minAvailable") == "100%" or (
                    isinstance(ps.get("minAvailable"), int) and replicas is not None
                    and ps["minAvailable"] >= replicas):
                fail(f"{p['__file']}: {p['metadata']['name']} never allows evicting {n}'s pods: "
                     f"node drains would hang")
        svcs = [s for s in by_kind.get("Service", []) if selects(s["spec"].get("selector", {}), labels)]
        if not svcs:
            fail(f"{where}: no Service selects {n}'s pods")
        c = cfgs.get(n)
        for s in svcs:
            for sp in s["spec"]["ports"]:
                tp = sp.get("targetPort", sp["port"])
                if c and (c["__ports"].get(tp) if isinstance(tp, str) else tp) != c["__port"]:
                    fail(f"{s['__file']}: port {sp.get('name')} targets {tp!r}, not {n}'s {c['__port']}")
        for pm in by_kind.get("PodMonitor", []):
            if not selects(match_labels(pm), labels):
                fail(f"{pm['__file']}: selector does not select {n}'s pods {labels}")
            job = labels.get(pm["spec"].get("jobLabel", ""))
            if job != "distillguard":
                fail(f"{pm['__file']}: jobLabel gives {n}'s pods job={job!r}; the alert rules select job=\"distillguard\"")
            for ep in pm["spec"]["podMetricsEndpoints"]:
                tp = ep.get("port")
                if c and ((c["__ports"].get(tp) if isinstance(tp, str) else tp) != c["__port"]
                          or ep.get("path", "/metrics") != "/metrics"):
                    fail(f"{pm['__file']}: endpoint {ep} is not {n}'s :{c['__port']}/metrics")

    # Autoscaling, and the link stage's one instance.
    scaled: dict[str, list[str]] = {}
    for so in by_kind.get("ScaledObject", []):
        target = check_scaledobject(so, deps, cfgs)
        if target:
            scaled.setdefault(target, []).append(so["metadata"]["name"])
    for n, d in deps.items():
        if len(scaled.get(n, [])) > 1:
            fail(f"{where}: {n} is scaled by {scaled[n]}: their HPAs would fight")
        if "replicas" not in d["spec"] and n not in scaled:
            fail(f"{d['__file']}: {n} sets no replicas and no ScaledObject scales it")
        c = cfgs.get(n)
        if c and c["kafka"]["role"] == "link" and c["kafka"]["link_shards"] > 1:
            check_link_shards(d, c)
        elif c and c["kafka"]["role"] in ("link", "cluster"):
            role = c["kafka"]["role"]
            if d["kind"] != "Deployment":
                fail(f"{d['__file']}: {n} (role {role}) must be a Deployment of one replica")
            if d["spec"].get("replicas") != 1:
                fail(f"{d['__file']}: {n} (role {role}) must run exactly one replica, has "
                     f"{d['spec'].get('replicas')!r}: two instances in its consumer group split "
                     f"clusters")
            if d["spec"].get("strategy", {}).get("type") != "Recreate":
                fail(f"{d['__file']}: {n} (role {role}) must use the Recreate strategy: a rolling "
                     f"update runs two {role} instances")
            for so in by_kind.get("ScaledObject", []):
                if so["spec"].get("scaleTargetRef", {}).get("name") == n and \
                        (so["spec"].get("minReplicaCount"), so["spec"].get("maxReplicaCount")) != (1, 1):
                    fail(f"{so['__file']}: {so['metadata']['name']} must pin {n} at "
                         f"minReplicaCount = maxReplicaCount = 1")
    return list(deps.values())


def check_link_shards(d: dict, c: dict) -> None:
    """Link shards (kafka.link_shards above 1): a StatefulSet of one pod per shard, each taking
    its shard from its ordinal."""
    n, shards = d["metadata"]["name"], c["kafka"]["link_shards"]
    where = f"{d['__file']} ({n})"
    if d["kind"] != "StatefulSet":
        fail(f"{where}: link shards run as a StatefulSet (one pod per ordinal), not a {d['kind']}")
    if d["spec"].get("replicas") != shards:
        fail(f"{where}: replicas {d['spec'].get('replicas')!r}, but kafka.link_shards is {shards}: "
             f"a shard without a pod leaves its values unjudged, a pod without a shard fails")
    env = d["spec"]["template"]["spec"]["containers"][0].get("env", [])
    src = [e for e in env if e["name"] == ENV_PREFIX + "KAFKA__LINK_SHARD"]
    if not src or src[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != POD_INDEX:
        fail(f"{where}: {ENV_PREFIX}KAFKA__LINK_SHARD must come from the pod's ordinal "
             f"(fieldRef {POD_INDEX})")


def check_k8s(binary: Binary | None) -> list[dict]:
    check_kustomizations()
    deployments = []
    for kdir, roles in TOPOLOGIES.items():
        try:
            deployments += check_topology(kdir, roles, binary)
        except Exception as e:  # noqa: BLE001 - a broken manifest is a finding
            fail(f"{rel(kdir)}: cannot be checked: {type(e).__name__}: {e}")
    return deployments


def check_prometheusrule(write: bool) -> None:
    src = ALERTS.read_text()
    body = src[src.index("groups:"):]
    header = PROMRULE.read_text().split("spec:\n", 1)[0] if PROMRULE.exists() else ""
    if write:
        PROMRULE.write_text(header + "spec:\n" + "".join(
            "  " + line if line.strip() else line for line in body.splitlines(True)))
        print(f"wrote {rel(PROMRULE)}")
    rule = yaml.safe_load(PROMRULE.read_text())
    if rule.get("spec", {}).get("groups") != yaml.safe_load(src)["groups"]:
        fail(f"{rel(PROMRULE)}: differs from {rel(ALERTS)}; run validate.py --write-prometheusrule")


# ------------------------------------------------------------------------------ compose

def compose_text(v) -> str:
    return " ".join(v) if isinstance(v, list) else str(v)


def check_compose(binary: Binary | None) -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc.get("services", {})
    where = rel(COMPOSE)
    missing = [n for n in ("kafka", "kafka-init", *COMPOSE_ROLES, "simulate", "producer",
                           "prometheus", "grafana") if n not in services]
    if missing:
        fail(f"{where}: no service {', '.join(missing)}")
        return

    def mounts(svc):
        out = {}
        for v in services[svc].get("volumes", []):
            parts = v.split(":")
            if parts[0].startswith("."):
                host = (COMPOSE.parent / parts[0]).resolve()
                if not host.exists():
                    fail(f"{where}: {svc} mounts {parts[0]}, which does not exist")
                out[parts[1]] = host
        return out

    # The default path runs the single service; the staged ones only with --profile staged.
    for name, role in COMPOSE_ROLES.items():
        profiles = services[name].get("profiles")
        if role == "all" and profiles:
            fail(f"{where}: {name} has profiles {profiles}: `docker compose up` would not run it")
        if role != "all" and profiles != [STAGED_PROFILE]:
            fail(f"{where}: {name} must be in profile {STAGED_PROFILE!r} only, has {profiles}")

    # kafka-init: topic -> partitions.
    init = compose_text(services["kafka-init"]["command"])
    created = {t: int(n) for t, n in re.findall(r"--topic (\S+) --partitions (\d+)", init)}
    if binary is None:
        return
    cfgs = {}
    for name, role in COMPOSE_ROLES.items():
        svc = services[name]
        cmd = svc.get("command", [])
        cfg_path = cmd[cmd.index("--config") + 1] if "--config" in cmd else None
        m = mounts(name)
        if cfg_path not in m:
            fail(f"{where}: {name} --config {cfg_path} is not a mounted file")
            continue
        toml_text = m[cfg_path].read_text()
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        check_env_names(env, binary, f"{where} ({name})")
        dg_env = {**{k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}, **flag_env(cmd)}
        binary.check(toml_text, dg_env, f"{rel(m[cfg_path])} (with the environment of {where} {name})")
        cfg = cfgs[name] = effective(binary.defaults, toml_text, dg_env)
        k = cfg["kafka"]
        if k["role"] != role:
            fail(f"{where}: {name} runs role {k['role']!r}, expected {role!r}")
        topics = [k[key] for key in ("alerts_topic", "dlq_topic", "control_topic", "verdicts_topic")]
        topics.append(consumed(cfg)[1])
        if role == "account":
            topics += observation_topics(k)
        if role == "link" and k["link_shards"] > 1:
            topics.append(k["links_topic"])
        for t in topics:
            if t not in created:
                fail(f"{where}: kafka-init does not create {t!r}, which {name} uses")
        if role in ("all", "account") and k["input_format"] != "json":
            fail(f"{where}: the producer writes JSON but {name}'s kafka.input_format is {k['input_format']!r}")
        grace = svc.get("stop_grace_period", "10s")
        if int(str(grace).rstrip("s")) < cfg["service"]["shutdown_deadline_secs"] + 5:
            fail(f"{where}: {name} stop_grace_period {grace} leaves no margin over service.shutdown_deadline_secs")
        adv = services["kafka"]["environment"].get("KAFKA_ADVERTISED_LISTENERS", "")
        for broker in k["brokers"].split(","):
            if broker not in adv:
                fail(f"{where}: {name}'s kafka.brokers {broker!r} is not an advertised listener ({adv})")
    if len(cfgs) != len(COMPOSE_ROLES):
        return
    single, account = cfgs["distillguard"]["kafka"], cfgs["distillguard-account"]["kafka"]
    staged = {n: cfgs[n]["kafka"] for n, r in COMPOSE_ROLES.items() if r != "all"}
    links = {n: k for n, k in staged.items() if k["role"] == "link"}
    port = port_of(cfgs["distillguard"]["service"]["metrics_addr"])
    dg = services["distillguard"]
    if not any(str(p).split(":")[-1] == str(port) for p in dg.get("ports", [])):
        fail(f"{where}: distillguard publishes {dg.get('ports')}, not the metrics port {port}")

    # The staged services: one topology (consumer group, alerts topic, link shard count),
    # every link shard once, reading an observations topic the account stage writes; beside
    # the single service, not in its consumer group (an "all" instance there would take input
    # partitions and write no observations), and alerts kept apart.
    for n, k in staged.items():
        if (k["group_id"], k["alerts_topic"], k["link_shards"]) != \
                (account["group_id"], account["alerts_topic"], account["link_shards"]):
            fail(f"{where}: {n} and distillguard-account are not one topology (group, alerts "
                 f"topic, kafka.link_shards: {k['group_id']!r}, {k['alerts_topic']!r}, "
                 f"{k['link_shards']} against {account['group_id']!r}, {account['alerts_topic']!r}, "
                 f"{account['link_shards']})")
    for n, k in links.items():
        if consumed({"kafka": k})[1] not in observation_topics(account):
            fail(f"{where}: {n} reads {consumed({'kafka': k})[1]!r}, which distillguard-account "
                 f"does not write ({observation_topics(account)})")
    shards = sorted(k["link_shard"] for k in links.values())
    if account["link_shards"] > 1 and shards != list(range(account["link_shards"])):
        fail(f"{where}: the link services run shards {shards} of {account['link_shards']}: each "
             f"shard exactly once")
    if account["link_shards"] > 1 and created.get(account["links_topic"], 0) < account["link_shards"]:
        fail(f"{where}: kafka-init creates {account['links_topic']} with "
             f"{created.get(account['links_topic'], 0)} partitions, fewer than the "
             f"{account['link_shards']} link shards: shard S writes partition S")
    if account["group_id"] == single["group_id"]:
        fail(f"{where}: the staged services share consumer group {single['group_id']!r} with the "
             f"single service, which would take input partitions without writing observations")
    if account["alerts_topic"] == single["alerts_topic"]:
        fail(f"{where}: both topologies write alerts to {single['alerts_topic']!r}")
    inp = created.get(account["input_topic"], 0)
    for t in observation_topics(account):
        if created.get(t, 0) < inp:
            fail(f"{where}: kafka-init creates {t} with {created.get(t, 0)} partitions, fewer than "
                 f"the {inp} of {account['input_topic']}: account instances refuse to start")

    def replicas(name):
        svc = services[name]
        return svc.get("deploy", {}).get("replicas", svc.get("scale", 1))
    for n, k in staged.items():
        if k["role"] in ("link", "cluster") and replicas(n) != 1:
            fail(f"{where}: {n} runs {replicas(n)} replicas: exactly one (a second instance of "
                 f"a link shard or of the cluster stage splits clusters)")
    if not 1 <= replicas("distillguard-account") <= inp:
        fail(f"{where}: distillguard-account runs {replicas('distillguard-account')} replicas, "
             f"outside 1..{inp} (the input's partitions)")

    prod = compose_text(services["producer"]["command"])
    if f"--topic {single['input_topic']} " not in prod:
        fail(f"{where}: the producer does not write to kafka.input_topic {single['input_topic']!r}")
    if account["input_topic"] != single["input_topic"]:
        fail(f"{where}: the staged services read {account['input_topic']!r}, which the producer does not fill")
    sim = services["simulate"]["command"]
    if sim[sim.index("--output") + 1] not in prod:
        fail(f"{where}: the producer does not read what simulate writes ({sim[sim.index('--output') + 1]})")

    pm = mounts("prometheus")
    pconf = pm.get("/etc/prometheus")
    if pconf is None or not (pconf / "prometheus.yml").exists():
        fail(f"{where}: prometheus does not get prometheus.yml mounted at /etc/prometheus")
    else:
        jobs = [sc for sc in yaml.safe_load((pconf / "prometheus.yml").read_text())["scrape_configs"]
                if sc["job_name"] == "distillguard"]
        static = {t for sc in jobs for st in sc.get("static_configs", []) for t in st["targets"]}
        # DNS A records: every container of a (replicated) compose service.
        dns = {(n, sd.get("port")) for sc in jobs for sd in sc.get("dns_sd_configs", [])
               if sd.get("type", "SRV") == "A" for n in sd.get("names", [])}
        for name, cfg in cfgs.items():
            p = port_of(cfg["service"]["metrics_addr"])
            if f"{name}:{p}" not in static and (name, p) not in dns:
                fail(f"{rel(pconf / 'prometheus.yml')}: job distillguard does not scrape {name}:{p} "
                     f"(static {sorted(static)}, DNS {sorted(dns)})")
    gm = mounts("grafana")
    prov = gm.get("/etc/grafana/provisioning")
    if prov is None:
        fail(f"{where}: grafana gets no provisioning folder")
        return
    for f in (prov / "datasources").glob("*.yml"):
        for ds in yaml.safe_load(f.read_text())["datasources"]:
            if ds["type"] == "prometheus" and ds["url"] != "http://prometheus:9090":
                fail(f"{rel(f)}: datasource url {ds['url']} is not the compose prometheus")
    for f in (prov / "dashboards").glob("*.yml"):
        for pr in yaml.safe_load(f.read_text())["providers"]:
            path = pr["options"]["path"]
            if path not in gm or not list(gm[path].glob("*.json")):
                fail(f"{rel(f)}: dashboards path {path} is not a mounted folder of dashboards")


def check_dockerfile(binary: Binary | None, deployments: list[dict]) -> None:
    text = DOCKERFILE.read_text()
    where = rel(DOCKERFILE)
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    if len(stages) < 2 or not stages[0].startswith("rust:") or stages[-1] != "debian:bookworm-slim":
        fail(f"{where}: expected a rust builder and a debian:bookworm-slim runtime, got {stages}")
    final = text[text.rindex("\nFROM"):]
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    if not user or user[-1].split(":")[0] in ("0", "root"):
        fail(f"{where}: the runtime stage does not switch to a non-root USER")
    expose = re.findall(r"^EXPOSE\s+(\d+)", final, re.M)
    cmd = re.search(r"^CMD\s+(\[.*\])", final, re.M)
    if binary is not None:
        port = port_of(binary.defaults["service"]["metrics_addr"])
        if str(port) not in expose:
            fail(f"{where}: EXPOSE {expose} lacks the default metrics port {port}")
    if cmd:
        # Every Deployment runs the image's command; a stage is chosen by the environment.
        argv = json.loads(cmd.group(1))
        for dep in deployments:
            if argv != dep["spec"]["template"]["spec"]["containers"][0].get("args"):
                fail(f"{where}: CMD {argv} differs from the args of {dep['__file']} ({dep['metadata']['name']})")
    else:
        fail(f"{where}: no CMD")


# ------------------------------------------------------------------------------ rules

def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]


def check_rules_docs_tests() -> None:
    anchors = {slug(m) for m in re.findall(r"^#{1,6}\s+(.+)$", RUNBOOK.read_text(), re.M)}
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    cases: dict[str, list] = {}
    for t in tests:
        for c in t.get("alert_rule_test", []):
            cases.setdefault(c["alertname"], []).append(c.get("exp_alerts") or [])
    base = None
    for r in alerts():
        name = r["alert"]
        ann = r.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                fail(f"{rel(ALERTS)}: {name} has no {key}")
        url = ann.get("runbook_url", "")
        m = re.fullmatch(r"(https://\S+/deploy/RUNBOOK\.md)#([\w-]+)", url)
        if not m:
            fail(f"{rel(ALERTS)}: {name} runbook_url {url!r} is not .../deploy/RUNBOOK.md#anchor")
        else:
            base = base or m.group(1)
            if m.group(1) != base:
                fail(f"{rel(ALERTS)}: {name} runbook_url base differs from the others")
            if m.group(2) not in anchors:
                fail(f"{rel(ALERTS)}: {name} runbook anchor #{m.group(2)} is no heading of {rel(RUNBOOK)}")
        if r.get("labels", {}).get("severity") not in ("critical", "warning"):
            fail(f"{rel(ALERTS)}: {name} severity must be critical or warning")
        got = cases.get(name, [])
        if not any(got):
            fail(f"{rel(ALERTS_TEST)}: no test where {name} fires")
        if all(got):
            fail(f"{rel(ALERTS_TEST)}: no test where {name} stays quiet (exp_alerts: [])")


def check_mutants(promtool: str) -> None:
    """Each alert's tests must notice when the alert can never fire."""
    names = [r["alert"] for r in alerts()]

    def survives(name: str) -> bool:
        with tempfile.TemporaryDirectory() as d:
            doc = yaml.safe_load(ALERTS.read_text())
            for g in doc["groups"]:
                for r in g["rules"]:
                    if r.get("alert") == name:
                        r["expr"] = "vector(0) > 1"
            Path(d, ALERTS.name).write_text(yaml.safe_dump(doc))
            shutil.copy(ALERTS_TEST, Path(d, ALERTS_TEST.name))
            res = subprocess.run([promtool, "test", "rules", ALERTS_TEST.name], cwd=d,
                                 capture_output=True, text=True)
            return res.returncode == 0

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for name, alive in zip(names, pool.map(survives, names)):
            if alive:
                fail(f"{rel(ALERTS_TEST)}: the tests still pass when {name} can never fire")
    print(f"validate: mutants: {len(names)} never-firing alerts, each caught by its tests")


def check_roles_selected(binary: Binary | None) -> None:
    """Every role="X" a rule or a panel selects is a kafka.role distillguard accepts: a renamed
    role would leave those rules silent and those panels empty."""
    if binary is None:
        return
    for path in (ALERTS, DASHBOARD):
        for role in sorted(set(re.findall(r'role=\\?"(\w+)\\?"', path.read_text()))):
            env = {ENV_PREFIX + "KAFKA__ROLE": role}
            if role == "cluster":
                # A cluster instance runs behind link shards only.
                env[ENV_PREFIX + "KAFKA__LINK_SHARDS"] = "2"
            binary.check("", env, f"{rel(path)}: selects role=\"{role}\", which as kafka.role")


# ------------------------------------------------------------------------------ dashboard

def check_dashboard() -> None:
    d = json.loads(DASHBOARD.read_text())
    where = rel(DASHBOARD)
    var = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    inst = var.get("instance")
    q = inst and (inst["query"]["query"] if isinstance(inst["query"], dict) else inst["query"])
    if not q or not q.startswith("label_values("):
        fail(f"{where}: no $instance variable from label_values")
    if var.get("datasource", {}).get("type") != "datasource":
        fail(f"{where}: no $datasource variable")
    ids = set()
    panels = [p for p in d["panels"]] + [c for p in d["panels"] for c in p.get("panels", [])]
    titles = set()
    for p in panels:
        t = p.get("title", "?")
        if p["id"] in ids:
            fail(f"{where}: duplicate panel id {p['id']}")
        ids.add(p["id"])
        g = p["gridPos"]
        if g["x"] + g["w"] > 24:
            fail(f"{where}: panel {t!r} overflows the 24-column grid")
        if p["type"] == "row":
            titles.add(t)
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"{where}: panel {t!r} does not use the $datasource variable")
        if p["type"] != "heatmap" and not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            fail(f"{where}: panel {t!r} has no unit")
        for tg in p.get("targets", []):
            if "$instance" not in tg.get("expr", ""):
                fail(f"{where}: panel {t!r} query {tg.get('refId')} ignores $instance")
    for row in ("Traffic", "Stages", "Detection", "Latency", "Kafka", "State", "Allowlist and verdicts"):
        if row not in titles:
            fail(f"{where}: no row {row!r}")


# ------------------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, help="distillguard release binary (config checks)")
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--mutants", action="store_true",
                    help="prove each alert's tests fail when it never fires (~1 min)")
    ap.add_argument("--write-prometheusrule", action="store_true")
    args = ap.parse_args()

    binary = Binary(args.binary) if args.binary else None
    if binary is None:
        print("validate: no --binary: skipping the checks that need distillguard", file=sys.stderr)
    def guarded(check, *a):
        # A file too broken for a check to read is a finding, not a crash.
        try:
            return check(*a)
        except Exception as e:  # noqa: BLE001
            fail(f"{check.__name__}: cannot read what it checks: {type(e).__name__}: {e}")

    guarded(check_parse)
    deployments = guarded(check_k8s, binary) or []
    guarded(check_prometheusrule, args.write_prometheusrule)
    guarded(check_compose, binary)
    guarded(check_dockerfile, binary, deployments)
    guarded(check_rules_docs_tests)
    guarded(check_roles_selected, binary)
    guarded(check_dashboard)
    if args.mutants and not errors:
        check_mutants(args.promtool)
    if errors:
        print(f"validate: {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print("validate: ok: deploy/ parses; both k8s topologies (single and staged), the compose file "
          "(default and staged profile) and the Dockerfile agree with the configuration"
          + (" accepted by distillguard config --check" if binary else "")
          + "; every alert is documented and tested")
    return 0


if __name__ == "__main__":
    sys.exit(main())
