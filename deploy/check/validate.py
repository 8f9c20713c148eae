#!/usr/bin/env python3
"""Static and binary-backed checks of everything under deploy/ that no Docker engine or
Kubernetes cluster is needed for.

    python3 deploy/check/validate.py --binary target/release/distillguard [--mutants] [--promtool promtool]
    python3 deploy/check/validate.py --write-prometheusrule      # regenerate k8s/prometheusrule.yaml

Checks, each failing with a message that names the file and the mismatch:
  * every YAML, JSON and TOML file under deploy/ parses; the core Kubernetes manifests validate
    against the Kubernetes schemas (kubernetes-validate, strict);
  * the ConfigMap's TOML with the Deployment's DISTILLGUARD__ environment, and the compose
    file's mounted TOML with its environment, pass `distillguard config --check`; every
    DISTILLGUARD__X__Y names a key of `distillguard config --print-default`;
  * ports, paths and names agree: containerPort, probes, Service, PodMonitor, scrape
    annotations and compose ports use service.metrics_addr's port; the config path in args
    and CMD is where the ConfigMap is mounted; topics created in compose are the configured
    ones; the grace period exceeds service.shutdown_deadline_secs; the memory request covers
    the state caps at the measured bytes per entry;
  * every alert has summary, description, a runbook_url whose anchor is a heading of
    deploy/RUNBOOK.md, and unit tests where it fires and where it stays quiet; with
    --mutants, each alert's tests must fail when its expression can never fire;
  * k8s/prometheusrule.yaml holds exactly the rules of prometheus/alerts.yml;
  * the dashboard's panels have units, stay in the grid, use the $datasource and $instance
    variables.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
PROMRULE = K8S / "prometheusrule.yaml"
ENV_PREFIX = "DISTILLGUARD__"

BENCHES = ROOT / "benches" / "README.md"


def measured_bytes(row: str) -> int:
    """A figure in bytes from the "Speed and memory" table of benches/README.md."""
    m = re.search(r"^\| " + re.escape(row) + r" \|[^|]*\| ([\d,]+) B\b", BENCHES.read_text(), re.M)
    if not m:
        sys.exit(f"validate: no '{row}' row with a figure in bytes in {BENCHES}")
    return int(m.group(1).replace(",", ""))


# Measured memory (benches/README.md, "Speed and memory"): bytes per tracked account / attribute value, and the
# rest of the process, plus librdkafka's prefetch queue and the pending-delivery buffer.
BYTES_PER_ACCOUNT = measured_bytes("memory per tracked account")
BYTES_PER_ATTRIBUTE_VALUE = measured_bytes("memory per attribute value")
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


def load_k8s() -> dict[str, dict]:
    """kind -> the (single) object of that kind in deploy/k8s."""
    objs: dict[str, dict] = {}
    for p in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(p.read_text()):
            if doc:
                doc["__file"] = rel(p)
                objs[doc["kind"]] = doc
    return objs


def check_kustomization() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kust.get("resources", []))
    for r in sorted(listed):
        if not (K8S / r).exists():
            fail(f"deploy/k8s/kustomization.yaml: resource {r} does not exist")
    for p in sorted(K8S.glob("*.yaml")):
        if p.name != "kustomization.yaml" and p.name not in listed:
            fail(f"deploy/k8s/kustomization.yaml: {p.name} is not listed")


def check_k8s_schemas(objs: dict[str, dict]) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        fail("kubernetes-validate is not installed: pip install kubernetes-validate (ci.sh does)")
        return
    version = kubernetes_validate.latest_version()
    for kind, obj in objs.items():
        if obj["apiVersion"].startswith(("monitoring.coreos.com", "kustomize.config.k8s.io")):
            continue  # CRDs: no bundled schema; checked field by field below
        data = {k: v for k, v in obj.items() if k != "__file"}
        try:
            kubernetes_validate.validate(data, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{obj['__file']}: {kind} is not valid Kubernetes {version}: {e.message} "
                 f"at {'/'.join(map(str, e.path))}")


# ------------------------------------------------------------------------------ config

class Binary:
    def __init__(self, path: Path):
        self.path = path
        out = subprocess.run([str(path), "config", "--print-default"],
                             capture_output=True, text=True, check=True).stdout
        self.defaults = tomllib.loads(out)

    def check(self, toml_text: str, env: dict[str, str], where: str) -> None:
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


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def check_env_names(env: dict[str, str], binary: Binary, where: str) -> None:
    for var in env:
        if var.startswith(ENV_PREFIX) and not binary.env_key_exists(var):
            fail(f"{where}: {var} names no key of `distillguard config --print-default`")


# ------------------------------------------------------------------------------ Kubernetes

def quantity_bytes(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(q))
    if not m:
        raise ValueError(f"memory quantity {q!r}")
    return int(float(m.group(1)) * units.get(m.group(2) or "", 1))


def check_k8s(objs: dict[str, dict], binary: Binary | None) -> None:
    need = ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "PodMonitor", "PrometheusRule"]
    for kind in need:
        if kind not in objs:
            fail(f"deploy/k8s: no {kind}")
    if any(k not in objs for k in need):
        return
    cm, dep, svc, pdb, pm = (objs[k] for k in need[:5])
    where = dep["__file"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"].get("labels", {})
    containers = pod["spec"]["containers"]
    c = containers[0]

    # The ConfigMap mount and the --config path.
    vol = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    mounts = [m for m in c.get("volumeMounts", []) if vol.get(m["name"], {}).get("configMap")]
    if not mounts:
        fail(f"{where}: the ConfigMap is not mounted")
        return
    mount = mounts[0]
    cmv = vol[mount["name"]]["configMap"]
    if cmv["name"] != cm["metadata"]["name"]:
        fail(f"{where}: mounts ConfigMap {cmv['name']!r}, but {cm['__file']} defines {cm['metadata']['name']!r}")
    items = cmv.get("items") or [{"key": k, "path": k} for k in cm["data"]]
    files = {mount["mountPath"].rstrip("/") + "/" + it["path"]: it["key"] for it in items}
    args = c.get("args", [])
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        fail(f"{where}: args {args} give no --config")
        return
    cfg_path = args[args.index("--config") + 1]
    if cfg_path not in files:
        fail(f"{where}: --config {cfg_path} is not a file of the mounted ConfigMap ({sorted(files)})")
        return
    toml_text = cm["data"][files[cfg_path]]

    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "valueFrom" in e:
            env[e["name"]] = "placeholder-from-" + next(iter(e["valueFrom"]))
    if binary is None:
        return
    check_env_names(env, binary, where)
    binary.check(toml_text, {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)},
                 f"{cm['__file']} (with the environment of {where})")
    cfg = effective(binary.defaults, toml_text, {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
    port = port_of(cfg["service"]["metrics_addr"])

    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    if port not in ports.values():
        fail(f"{where}: no containerPort {port} (service.metrics_addr is {cfg['service']['metrics_addr']})")

    def resolve(p):
        return ports.get(p) if isinstance(p, str) else p

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
        if resolve(get.get("port")) != port:
            fail(f"{where}: {probe} port {get.get('port')!r} is not {port}")

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
        state = (cfg["engine"]["max_accounts"] * BYTES_PER_ACCOUNT
                 + cfg["engine"]["max_attribute_values"] * BYTES_PER_ATTRIBUTE_VALUE
                 + cfg["service"]["max_pending_deliveries"] * BYTES_PER_PENDING_DELIVERY
                 + cfg["harvest"]["copies_sketch_max_mib"] * 2**20
                 + BASELINE_BYTES)
        if req < state:
            fail(f"{where}: memory request {res['requests']['memory']} is below the "
                 f"{state / 2**20:.0f} MiB that the configured caps need")
        if lim < req:
            fail(f"{where}: memory limit below the request")
    except (KeyError, ValueError) as e:
        fail(f"{where}: memory requests/limits missing or unreadable: {e}")

    sel = dep["spec"]["selector"]["matchLabels"]
    for what, s in (("Deployment selector", sel), (f"{svc['__file']} selector", svc["spec"]["selector"]),
                    (f"{pdb['__file']} selector", pdb["spec"]["selector"]["matchLabels"]),
                    (f"{pm['__file']} selector", pm["spec"]["selector"]["matchLabels"])):
        if any(labels.get(k) != v for k, v in s.items()):
            fail(f"{what} {s} does not match the pod labels {labels}")

    for sp in svc["spec"]["ports"]:
        if resolve(sp.get("targetPort", sp["port"])) != port:
            fail(f"{svc['__file']}: port {sp.get('name')} targets {sp.get('targetPort')!r}, not {port}")

    job = labels.get(pm["spec"].get("jobLabel", ""), None)
    if job != "distillguard":
        fail(f"{pm['__file']}: jobLabel gives job={job!r}; the alert rules select job=\"distillguard\"")
    for ep in pm["spec"]["podMetricsEndpoints"]:
        if resolve(ep.get("port")) != port or ep.get("path", "/metrics") != "/metrics":
            fail(f"{pm['__file']}: endpoint {ep} is not :{port}/metrics")


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

def check_compose(binary: Binary | None) -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc.get("services", {})
    where = rel(COMPOSE)
    missing = [n for n in ("kafka", "kafka-init", "distillguard", "simulate", "producer",
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

    dg = services["distillguard"]
    cmd = dg.get("command", [])
    cfg_path = cmd[cmd.index("--config") + 1] if "--config" in cmd else None
    m = mounts("distillguard")
    if cfg_path not in m:
        fail(f"{where}: distillguard --config {cfg_path} is not a mounted file")
        return
    toml_text = m[cfg_path].read_text()
    env = {k: str(v) for k, v in (dg.get("environment") or {}).items()}
    if binary is None:
        return
    check_env_names(env, binary, f"{where} (distillguard)")
    binary.check(toml_text, {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)},
                 f"{rel(m[cfg_path])} (with the environment of {where} distillguard)")
    cfg = effective(binary.defaults, toml_text, {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
    k = cfg["kafka"]
    port = port_of(cfg["service"]["metrics_addr"])

    if not any(str(p).split(":")[-1] == str(port) for p in dg.get("ports", [])):
        fail(f"{where}: distillguard publishes {dg.get('ports')}, not the metrics port {port}")
    adv = services["kafka"]["environment"].get("KAFKA_ADVERTISED_LISTENERS", "")
    for broker in k["brokers"].split(","):
        if broker not in adv:
            fail(f"{where}: kafka.brokers {broker!r} is not an advertised listener ({adv})")
    init = " ".join(services["kafka-init"]["command"]) if isinstance(services["kafka-init"]["command"], list) \
        else services["kafka-init"]["command"]
    for key in ("input_topic", "alerts_topic", "dlq_topic", "control_topic", "verdicts_topic"):
        if f"--topic {k[key]} " not in init:
            fail(f"{where}: kafka-init does not create kafka.{key} {k[key]!r}")
    prod = services["producer"]["command"]
    prod = " ".join(prod) if isinstance(prod, list) else prod
    if f"--topic {k['input_topic']} " not in prod:
        fail(f"{where}: the producer does not write to kafka.input_topic {k['input_topic']!r}")
    if k["input_format"] != "json":
        fail(f"{where}: the producer writes JSON but kafka.input_format is {k['input_format']!r}")
    sim = services["simulate"]["command"]
    if sim[sim.index("--output") + 1] not in prod:
        fail(f"{where}: the producer does not read what simulate writes ({sim[sim.index('--output') + 1]})")
    grace = dg.get("stop_grace_period", "10s")
    if int(str(grace).rstrip("s")) < cfg["service"]["shutdown_deadline_secs"] + 5:
        fail(f"{where}: stop_grace_period {grace} leaves no margin over service.shutdown_deadline_secs")

    pm = mounts("prometheus")
    pconf = pm.get("/etc/prometheus")
    if pconf is None or not (pconf / "prometheus.yml").exists():
        fail(f"{where}: prometheus does not get prometheus.yml mounted at /etc/prometheus")
    else:
        targets = [t for sc in yaml.safe_load((pconf / "prometheus.yml").read_text())["scrape_configs"]
                   if sc["job_name"] == "distillguard"
                   for st in sc.get("static_configs", []) for t in st["targets"]]
        if f"distillguard:{port}" not in targets:
            fail(f"{rel(pconf / 'prometheus.yml')}: job distillguard does not scrape distillguard:{port} ({targets})")
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


def check_dockerfile(binary: Binary | None, objs: dict[str, dict]) -> None:
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
        argv = json.loads(cmd.group(1))
        dep = objs.get("Deployment")
        if dep and argv != dep["spec"]["template"]["spec"]["containers"][0].get("args"):
            fail(f"{where}: CMD {argv} differs from the Deployment's args")
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
    for row in ("Traffic", "Detection", "Latency", "Kafka", "State", "Allowlist and verdicts"):
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
            check(*a)
        except Exception as e:  # noqa: BLE001
            fail(f"{check.__name__}: cannot read what it checks: {type(e).__name__}: {e}")

    objs: dict[str, dict] = {}
    guarded(check_parse)
    guarded(lambda: objs.update(load_k8s()))
    guarded(check_kustomization)
    guarded(check_k8s_schemas, objs)
    guarded(check_k8s, objs, binary)
    guarded(check_prometheusrule, args.write_prometheusrule)
    guarded(check_compose, binary)
    guarded(check_dockerfile, binary, objs)
    guarded(check_rules_docs_tests)
    guarded(check_dashboard)
    if args.mutants and not errors:
        check_mutants(args.promtool)
    if errors:
        print(f"validate: {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print("validate: ok: deploy/ parses; k8s manifests, compose file and Dockerfile agree with "
          "the configuration" + (" accepted by distillguard config --check" if binary else "")
          + "; every alert is documented and tested")
    return 0


if __name__ == "__main__":
    sys.exit(main())
