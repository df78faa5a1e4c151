#!/usr/bin/env python3
"""Checks docs/observability/ against the one list of metric names (metrics.yml).

- dashboard.json is valid JSON, a recent schema, with a `datasource` variable and no
  hard-coded datasource UIDs;
- every PromQL expression in dashboard.json and alerts.yml uses only metrics of metrics.yml,
  with their labels and label values (alerts may also use the series alerts.yml's own
  recording rules define, named level:metric:operations; the dashboard may not, so that it
  works without them); dashboard expressions also pass `promtool check rules`;
- every alert has a known severity, summary, description and a runbook that names an
  existing section of README.md;
- the stats_tags of README.md turn every stat name of the spec into the metric and labels of
  metrics.yml and touch no other stat; README.md's stats_config equals envoy/envoy.yaml's once
  that file has one.

A self-test runs first, so a checker that stopped catching mistakes fails too.
Run from anywhere: `python3 docs/observability/check.py` (PyYAML needed; make uses the venv).
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SEVERITIES = {"warning", "critical"}
GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk",
                "bottomk", "quantile", "count_values", "limitk", "limit_ratio"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
KEYWORDS |= LABEL_LISTS | AGGREGATIONS
TOKEN = re.compile(
    r"""(?P<ws>\s+|\#[^\n]*)
      |(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<num>0x[0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:[smhdwy]|ms)*)
      |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      |(?P<op>=~|!~|!=|==|>=|<=|[{}()\[\],=<>+\-*/%^@])""",
    re.X,
)


# --- the allowed names ------------------------------------------------------------------
def load_allowed(path=HERE / "metrics.yml"):
    """Series name -> {label: allowed values or None}; plus the labels every series may carry."""
    spec = yaml.safe_load(path.read_text())
    series = {}
    for section in ("filter", "envoy"):
        for name, info in spec[section].items():
            labels = dict(info.get("labels") or {})
            labels = {k: (None if v is None else {str(x) for x in v}) for k, v in labels.items()}
            if info["type"] == "histogram":
                series[name + "_bucket"] = {**labels, "le": None}
                series[name + "_sum"] = labels
                series[name + "_count"] = labels
            else:
                series[name] = labels
    return series, set(spec["target_labels"]), spec


# --- PromQL -------------------------------------------------------------------------------
def tokens(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def unquote(s):
    return s[1:-1] if s[0] == "`" else s[1:-1].encode().decode("unicode_escape")


def check_expr(expr, allowed, target_labels):
    """Problems with the metric names, labels and label values one expression uses."""
    for var in GRAFANA_INTERVALS:
        expr = expr.replace(var, "5m")
    toks, problems, i = tokens(expr), [], 0
    all_labels = target_labels.union(*[set(v) for v in allowed.values()])

    def matchers(i, metric):
        # toks[i] is "{": read `label op "value"` pairs up to "}".
        i += 1
        while toks[i][1] != "}":
            label, op, value = toks[i][1], toks[i + 1][1], unquote(toks[i + 2][1])
            i += 3
            if toks[i][1] == ",":
                i += 1
            if label == "__name__":
                if op == "=" and value not in allowed:
                    problems.append(f"unknown metric {value!r}")
                continue
            if metric is None:
                continue
            labels = allowed.get(metric, {})
            if label not in labels and label not in target_labels:
                problems.append(f"{metric} has no label {label!r}")
                continue
            values = labels.get(label)
            if values is None or "$" in value:
                continue
            if op in ("=", "!="):
                wanted = [value]
            elif re.fullmatch(r"[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*", value):
                wanted = value.split("|")
            else:
                continue
            for v in wanted:
                if v not in values:
                    problems.append(f"{metric}{{{label}}} never takes the value {v!r}")
        return i + 1

    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident" and text in LABEL_LISTS and nxt == "(":
            i += 2
            while toks[i][1] != ")":
                if toks[i][0] == "ident" and toks[i][1] not in all_labels:
                    problems.append(f"no metric has the label {toks[i][1]!r} ({text})")
                i += 1
            i += 1
        elif kind == "ident" and nxt == "(":
            i += 1  # a function or an aggregation
        elif kind == "ident" and text.lower() not in KEYWORDS:
            if text not in allowed:
                problems.append(f"unknown metric {text!r}")
                i = matchers(i + 1, None) if nxt == "{" else i + 1
            else:
                i = matchers(i + 1, text) if nxt == "{" else i + 1
        elif text == "{":
            i = matchers(i, None)
        elif text == "[":
            while toks[i][1] != "]":
                i += 1
            i += 1
        else:
            i += 1
    return problems


def check_grafana_query(query, allowed, target_labels):
    """A template variable query: PromQL, or Grafana's label_values([selector,] label)."""
    m = re.fullmatch(r"\s*label_values\((.*)\)\s*", query, re.S)
    if not m:
        return check_expr(query, allowed, target_labels)
    selector, _, label = m.group(1).rpartition(",")
    label = label.strip()
    all_labels = target_labels.union(*[set(v) for v in allowed.values()])
    problems = [] if label in all_labels else [f"no metric has the label {label!r}"]
    return problems + (check_expr(selector, allowed, target_labels) if selector.strip() else [])


# --- alerts ---------------------------------------------------------------------------------
def recorded_series(doc):
    """Series alerts.yml's recording rules define: name -> the labels their `by (...)` keep
    (any value). Problems with their names come back too."""
    series, problems = {}, []
    for group in doc["groups"]:
        for rule in group["rules"]:
            name = rule.get("record")
            if not name:
                continue
            if not re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", name):
                problems.append(f"alerts.yml {name}: a recorded series is named level:metric:operations")
            labels = set()
            for m in re.finditer(r"\bby\s*\(([^)]*)\)", rule["expr"]):
                labels |= {label.strip() for label in m.group(1).split(",") if label.strip()}
            series[name] = {label: None for label in labels}
    return series, problems



def github_anchors(markdown):
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def check_alerts(doc, allowed, target_labels, anchors):
    problems, names = [], set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            where = f"alerts.yml {name}"
            names.add(name)
            problems += [f"{where}: {p}" for p in check_expr(rule["expr"], allowed, target_labels)]
            if "alert" not in rule:
                continue
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                problems.append(f"{where}: severity must be one of {sorted(SEVERITIES)}")
            notes = rule.get("annotations", {})
            for key in ("summary", "description", "runbook"):
                if not notes.get(key):
                    problems.append(f"{where}: no {key} annotation")
            page, _, anchor = notes.get("runbook", "").partition("#")
            if page != "docs/observability/README.md" or anchor not in anchors:
                problems.append(f"{where}: runbook {notes.get('runbook')!r} is no README.md section")
    return problems, names


# --- dashboard ------------------------------------------------------------------------------
def walk(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from walk(child)


def dashboard_exprs(dash):
    """(where, expression) for every panel target."""
    out = []
    for node in walk(dash.get("panels", [])):
        if isinstance(node, dict) and "targets" in node:
            for t in node["targets"]:
                if "expr" in t:
                    out.append((f"panel {node.get('title')!r} {t.get('refId')}", t["expr"]))
    return out


def check_dashboard(dash, allowed, target_labels):
    problems = []
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        problems.append("dashboard: schemaVersion must be 36 or newer")
    if dash.get("uid"):
        problems.append("dashboard: a fixed dashboard uid (leave it to the importer)")
    variables = dash.get("templating", {}).get("list", [])
    if not any(v.get("type") == "datasource" and v.get("name") == "datasource" for v in variables):
        problems.append("dashboard: no `datasource` template variable")
    for node in walk(dash):
        if isinstance(node, dict) and isinstance(node.get("datasource"), dict):
            uid = node["datasource"].get("uid")
            if uid != "${datasource}":
                problems.append(f"dashboard: hard-coded datasource uid {uid!r}")
    for v in variables:
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
            for query in {q, v.get("definition", q)}:
                problems += [f"dashboard variable {v['name']}: {p}"
                             for p in check_grafana_query(query, allowed, target_labels)]
    exprs = dashboard_exprs(dash)
    if not exprs:
        problems.append("dashboard: no PromQL at all")
    for where, expr in exprs:
        problems += [f"dashboard {where}: {p}" for p in check_expr(expr, allowed, target_labels)]
    return problems, exprs


def promtool_syntax(exprs):
    """Dashboard PromQL through promtool's parser, as recording rules of a throwaway file."""
    rules = [{"record": f"dashboard:expr_{n}", "expr": replace_intervals(e)}
             for n, (_, e) in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        f.flush()
        run = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    if run.returncode != 0:
        return [f"dashboard PromQL refused by promtool:\n{run.stdout}{run.stderr}"]
    return []


def replace_intervals(expr):
    for var in GRAFANA_INTERVALS:
        expr = expr.replace(var, "5m")
    return expr


# --- stats_tags -----------------------------------------------------------------------------
def documented_stats_config(readme):
    for block in re.findall(r"```yaml\n(.*?)```", readme, re.S):
        if block.startswith("stats_config:"):
            return yaml.safe_load(block)["stats_config"]
    raise SystemExit("README.md has no ```yaml block starting with stats_config:")


def prometheus_view(stat, tags):
    """Envoy's treatment of a stat name: every tag regex in turn takes its first group out of
    the name and keeps its second as the tag value; the `wasmcustom.` namespace is dropped
    and dots become underscores. Returns (name, labels); None if not a wasmcustom stat."""
    labels = {}
    for t in tags:
        m = re.search(t["regex"], stat)
        if m:
            labels[t["tag_name"]] = m.group(2)
            stat = stat[: m.start(1)] + stat[m.end(1):]
    if not stat.startswith("wasmcustom."):
        return None, labels
    return re.sub(r"[^A-Za-z0-9_]", "_", stat[len("wasmcustom."):]), labels


def check_stats_tags(stats_config, spec):
    problems, tags = [], stats_config["stats_tags"]
    for t in tags:
        if not t["regex"].startswith(r"^wasmcustom\.hokusai_auth\."):
            problems.append(f"stats_tags {t['tag_name']}: regex not anchored to wasmcustom.hokusai_auth.")
        if re.compile(t["regex"]).groups < 2:
            problems.append(f"stats_tags {t['tag_name']}: needs two groups (removed part, value)")
    if problems:
        return problems
    sample = {"identity": ["spiffe://hokusai.internal/ns/development/sa/hokusai-api", "hokusai-api-client"]}
    for name, info in spec["filter"].items():
        base = "wasmcustom.hokusai_auth." + name[len("hokusai_auth_"):]
        cases = [(base, {})]
        for label, values in (info.get("labels") or {}).items():
            cases = [(f"{base}.{label}={v}", {label: str(v)}) for v in (values or sample[label])]
        for stat, want in cases:
            got = prometheus_view(stat, tags)
            if got != (name, want):
                problems.append(f"stats_tags: {stat} comes out as {got}, not {(name, want)}")
    for other in ("wasm.hokusai_auth.vm_reload_success", "http.hokusai.downstream_rq_total",
                  "wasmcustom.other_filter.requests.path=external", "wasmcustom.hokusai_auth.denied.401",
                  "cluster.auth_service.upstream_rq_503"):
        if prometheus_view(other, tags)[1]:
            problems.append(f"stats_tags: touches {other}, which is not ours")
    return problems


def check_envoy_yaml(stats_config):
    """Every Envoy config that runs the filter carries the documented stats_config."""
    problems = []
    for path in ("envoy/envoy.yaml", "envoy/ecs/envoy.yaml"):
        envoy = yaml.safe_load((REPO / path).read_text())
        if envoy.get("stats_config") != stats_config:
            problems.append(f"{path} stats_config differs from README.md's (or is missing)")
    return problems


# --- self-test ------------------------------------------------------------------------------
def self_test(allowed, target_labels, spec):
    """Mistakes the checker must catch, and correct uses it must accept."""
    bad = {
        "rate(hokusai_auth_request[5m])": "unknown metric",
        "envoy_wasmcustom_hokusai_auth_requests": "unknown metric",
        'hokusai_auth_decisions{outcome="4O1"}': "never takes the value",
        'hokusai_auth_decisions{outcome=~"401|430"}': "never takes the value",
        'hokusai_auth_requests{reason="timeout"}': "has no label",
        "sum by (pth) (hokusai_auth_requests)": "no metric has the label",
        '{__name__="hokusai_auth_nope"}': "unknown metric",
        "hokusai_auth_callout_latency_ms": "unknown metric",
    }
    good = [
        'sum by (job, le) (rate(hokusai_auth_callout_latency_ms_bucket{job=~"$job"}[$__rate_interval]))',
        'hokusai_auth_requests{path!="exempt"} and on (job) envoy_wasm_wasm_vm_count offset 5m',
        'min by (identity) (hokusai_auth_peer_cert_not_after > 0) - time() < 30 * 86400',
    ]
    failures = []
    for expr, wanted in bad.items():
        found = check_expr(expr, allowed, target_labels)
        if not any(wanted in p for p in found):
            failures.append(f"self-test: {expr!r} not flagged ({wanted}); got {found}")
    for expr in good:
        if check_expr(expr, allowed, target_labels):
            failures.append(f"self-test: {expr!r} wrongly flagged: {check_expr(expr, allowed, target_labels)}")
    if check_grafana_query("label_values(hokusai_auth_requests, jbo)", allowed, target_labels) == []:
        failures.append("self-test: label_values with an unknown label not flagged")
    rules = {"groups": [{"name": "g", "rules": [
        {"record": "job:hokusai_auth_requests:rate5m",
         "expr": "sum by (job) (rate(hokusai_auth_requests[5m]))"},
        {"record": "badname", "expr": "hokusai_auth_callouts"}]}]}
    recorded, naming = recorded_series(rules)
    if not any("badname" in p for p in naming):
        failures.append("self-test: a recorded series not named level:metric:operations not flagged")
    with_recorded = {**allowed, **recorded}
    if check_expr("job:hokusai_auth_requests:rate5m", allowed, target_labels) == []:
        failures.append("self-test: a recorded series used without its rule not flagged")
    for expr in ("job:hokusai_auth_requests:rate5m > 1", 'job:hokusai_auth_requests:rate5m{job="a"}'):
        if check_expr(expr, with_recorded, target_labels):
            failures.append(f"self-test: {expr!r} wrongly flagged with its recording rule")
    tags = [{"tag_name": "path", "regex": r"^wasmcustom\.hokusai_auth\.requests\.path=(.+)$"}]
    if not check_stats_tags({"stats_tags": tags}, spec):
        failures.append("self-test: a one-group stats_tags regex not flagged")
    if check_dashboard({"schemaVersion": 39, "panels": [
            {"datasource": {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}, "targets": [
                {"expr": "hokusai_auth_callouts"}]}]}, allowed, target_labels)[0] == []:
        failures.append("self-test: a hard-coded datasource uid not flagged")
    return failures


def main():
    allowed, target_labels, spec = load_allowed()
    problems = self_test(allowed, target_labels, spec)
    readme = (HERE / "README.md").read_text()
    alerts = yaml.safe_load((HERE / "alerts.yml").read_text())
    recorded, naming = recorded_series(alerts)
    alert_problems, _ = check_alerts(alerts, {**allowed, **recorded}, target_labels,
                                     github_anchors(readme))
    problems += naming + alert_problems
    try:
        dash = json.loads((HERE / "dashboard.json").read_text())
    except json.JSONDecodeError as e:
        problems.append(f"dashboard.json is not valid JSON: {e}")
        dash = None
    if dash is not None:
        dash_problems, exprs = check_dashboard(dash, allowed, target_labels)
        problems += dash_problems + promtool_syntax(exprs)
    stats_config = documented_stats_config(readme)
    problems += check_stats_tags(stats_config, spec) + check_envoy_yaml(stats_config)
    for p in problems:
        print(f"FAIL {p}")
    if problems:
        return 1
    print(f"observability docs OK: {len(allowed)} series names, alerts, dashboard "
          f"({len(exprs)} queries), stats_tags")
    return 0


if __name__ == "__main__":
    sys.exit(main())
