#!/usr/bin/env python3
"""Drift check: do the dashboard and the alert rules still match what the service exports?

    python3 deploy/check/drift.py --scrape SCRAPE.txt [--scrape STAGED.txt]... [--dashboard FILE.json]... [--rules FILE.yml]...

Given real /metrics scrapes of distillguard (ci.sh passes one of `demo` and one of
`demo --topology staged`), fails (exit 1, naming each problem) when
  * a metric named in a dashboard query or a rule expression is in none of the scrapes
    (histogram series must be referenced as _bucket/_sum/_count, which must exist; `up` and
    the Prometheus-made ALERTS series are exempt);
  * a query selects a stage (`role="..."`) that no scrape's distillguard_build_info carries as
    its role label (a renamed label or value would leave the stage panels and rules empty);
  * a dashboard query does not parse as PromQL: Grafana variables are replaced by concrete
    values and each query becomes a recording rule in a temporary rules file that
    `promtool check rules` parses;
  * `promtool check metrics` finds a problem in a scrape.

Metrics that the service exports but nothing uses are listed as a note, not an error.
Needs python3 with PyYAML (for the rules) and promtool on PATH (or --promtool).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - message for humans
    sys.exit("drift.py needs PyYAML: python3 -m pip install pyyaml (ci.sh sets up a venv with it)")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DASHBOARDS = [ROOT / "deploy/grafana/dashboards/distillguard.json"]
DEFAULT_RULES = [ROOT / "deploy/prometheus/alerts.yml"]

# Series Prometheus makes itself, never in a scrape.
EXEMPT = {"up", "ALERTS", "ALERTS_FOR_STATE"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# PromQL words that look like identifiers but are not metric names.
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "start", "end",
    # aggregation operators may be followed by `by (...)` before their parenthesis
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}

# Grafana's built-in variables, replaced by values of the right type.
GRAFANA_BUILTINS = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1h",
    "__interval_ms": "60000", "__range_s": "3600", "__range_ms": "3600000",
}


def substitute_variables(query: str) -> str:
    """Grafana query -> PromQL: built-ins get durations/numbers, dashboard variables a value."""

    def value(name: str) -> str:
        return GRAFANA_BUILTINS.get(name, "x")

    query = re.sub(r"\$\{(\w+)(?::[^}]*)?\}", lambda m: value(m.group(1)), query)
    query = re.sub(r"\[\[(\w+)(?::[^\]]*)?\]\]", lambda m: value(m.group(1)), query)
    query = re.sub(r"\$(\w+)", lambda m: value(m.group(1)), query)
    return query


def metric_names(promql: str) -> set[str]:
    """Metric names in a PromQL expression (a tokenizer, not a parser: good enough for names,
    since promtool checks the syntax separately)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', promql)  # strings
    s = re.sub(r"#[^\n]*", " ", s)                                               # comments
    s = re.sub(r"\{[^{}]*\}", " ", s)                                            # label matchers
    s = re.sub(r"\[[^\[\]]*\]", " ", s)                                          # ranges, subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", r"\1", s)
    s = re.sub(r"(?<![A-Za-z0-9_:])\d[\w.]*", " ", s)                           # numbers, durations
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or m.group(0) in KEYWORDS:
            continue  # a function or an operator
        names.add(m.group(0))
    return names


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(where, query) for every query in a Grafana dashboard: panel targets (rows included),
    annotations and query variables."""
    dash = json.loads(path.read_text())
    out: list[tuple[str, str]] = []

    def walk(node, where):
        if isinstance(node, dict):
            title = node.get("title") or node.get("name")
            here = f"{where} / {title}" if title and node is not dash else where
            if isinstance(node.get("expr"), str) and node["expr"].strip():
                out.append((f"{here} [{node.get('refId', 'expr')}]", node["expr"]))
            for key, child in node.items():
                if key != "templating":
                    walk(child, here)
        elif isinstance(node, list):
            for child in node:
                walk(child, where)

    walk(dash, path.name)
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        # label_values(selector, label) and query_result(expr) wrap PromQL; label_values(label)
        # and metrics(regex) hold none.
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q, re.S) or \
            re.fullmatch(r"\s*query_result\((.*)\)\s*", q, re.S)
        if m:
            out.append((f"{path.name} / variable ${var.get('name')}", m.group(1)))
    return out


def rule_queries(path: Path) -> list[tuple[str, str]]:
    doc = yaml.safe_load(path.read_text()) or {}
    out = []
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            out.append((f"{path.name} / {name}", str(rule.get("expr", ""))))
    return out


def recorded_names(paths: list[Path]) -> set[str]:
    names = set()
    for path in paths:
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            names.update(r["record"] for r in group.get("rules", []) if "record" in r)
    return names


def parse_scrape(text: str) -> tuple[set[str], dict[str, str]]:
    """Sample names and declared types of a Prometheus text exposition."""
    samples, types = set(), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return samples, types


def check_names(queries, samples, types, recorded) -> list[str]:
    problems = []
    for where, query in queries:
        for name in sorted(metric_names(substitute_variables(query))):
            if name in samples or name in EXEMPT or name in recorded:
                continue
            if types.get(name) in ("histogram", "summary"):
                problems.append(f"{where}: `{name}` is a {types[name]}: query its "
                                f"_bucket/_sum/_count series")
            else:
                problems.append(f"{where}: metric `{name}` is not in the scrape")
    return problems


def exported_roles(scrape_text: str) -> set[str]:
    """The role label values of distillguard_build_info in a scrape."""
    return set(re.findall(r'^distillguard_build_info\{[^}]*\brole="([^"]*)"', scrape_text, re.M))


def check_roles(queries, roles: set[str]) -> list[str]:
    problems = []
    for where, query in queries:
        for role in sorted(set(re.findall(r'\brole\s*=\s*"([^"]*)"', query))):
            if role not in roles:
                problems.append(f"{where}: selects role=\"{role}\", but distillguard_build_info "
                                f"carries role {sorted(roles) or 'nowhere'} in the scrapes")
    return problems


def check_parse(queries, promtool: str) -> list[str]:
    """Every query as a recording rule; promtool parses them. On failure, one file per query
    pins down which."""

    def run(batch) -> subprocess.CompletedProcess:
        rules = [{"record": f"drift_check:query_{i}", "expr": substitute_variables(q)}
                 for i, (_, q) in batch]
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            yaml.safe_dump({"groups": [{"name": "drift_check", "rules": rules}]}, f)
        try:
            return subprocess.run([promtool, "check", "rules", f.name],
                                  capture_output=True, text=True)
        finally:
            os.unlink(f.name)

    indexed = list(enumerate(queries))
    if run(indexed).returncode == 0:
        return []
    problems = []
    for item in indexed:
        res = run([item])
        if res.returncode != 0:
            detail = " ".join((res.stdout + res.stderr).split())
            problems.append(f"{item[1][0]}: does not parse as PromQL: {detail}")
    return problems or ["promtool check rules failed on the dashboard queries as a whole"]


def check_metrics_lint(scrape_text: str, promtool: str) -> list[str]:
    res = subprocess.run([promtool, "check", "metrics"], input=scrape_text,
                         capture_output=True, text=True)
    if res.returncode != 0:
        return [f"promtool check metrics: {line}"
                for line in (res.stdout + res.stderr).strip().splitlines()]
    return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scrape", required=True, type=Path, action="append",
                    help="a saved /metrics response (repeatable: the metrics of all of them count)")
    ap.add_argument("--dashboard", action="append", type=Path,
                    help="Grafana dashboard JSON (repeatable; default: the repository's)")
    ap.add_argument("--rules", action="append", type=Path,
                    help="Prometheus rules file (repeatable; default: the repository's)")
    ap.add_argument("--promtool", default="promtool")
    args = ap.parse_args()
    dashboards = args.dashboard or DEFAULT_DASHBOARDS
    rules = args.rules or DEFAULT_RULES

    samples, types, roles = set(), {}, set()
    scrape_texts = [p.read_text() for p in args.scrape]
    for path, text in zip(args.scrape, scrape_texts):
        s, t = parse_scrape(text)
        if not s:
            print(f"drift: {path} holds no samples", file=sys.stderr)
            return 1
        samples |= s
        types.update(t)
        roles |= exported_roles(text)

    dash_q = [q for d in dashboards for q in dashboard_queries(d)]
    rule_q = [q for r in rules for q in rule_queries(r)]
    recorded = recorded_names(rules)

    problems = check_names(dash_q + rule_q, samples, types, recorded)
    problems += check_roles(dash_q + rule_q, roles)
    problems += check_parse(dash_q, args.promtool)
    for text in scrape_texts:
        problems += check_metrics_lint(text, args.promtool)

    used = set().union(*(metric_names(substitute_variables(q)) for _, q in dash_q + rule_q))
    used |= {u[: -len(s)] for u in used for s in HISTOGRAM_SUFFIXES if u.endswith(s)}
    unused = sorted(n for n in types if n.startswith("distillguard_") and n not in used)
    if unused:
        print("drift: note: exported but used by no panel or rule: " + ", ".join(unused))

    if problems:
        print(f"drift: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"drift: ok: {len(dash_q)} dashboard queries and {len(rule_q)} rules use "
          f"{len(used & samples)} metrics, all in the scrapes, and select only the roles they "
          f"export ({', '.join(sorted(roles))}); dashboard queries parse; "
          f"{len(scrape_texts)} scrape(s) pass promtool check metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
