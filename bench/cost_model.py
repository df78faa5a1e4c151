#!/usr/bin/env python3
"""The cost model (bench/README.md, "Cost model"): where a request's cost goes.

    make cost-model          # in-VM: wasm instructions per request path, callgrind of the core
    make cost-model-envoy    # Envoy side: CPU per host call, per wasm filter, per request (~8 min)

Subcommands (run through make, which builds what they need):

  native   runs the core's warm decision natively under callgrind (benches/core_callgrind.rs)
           and writes bench/raw/callgrind_core.json
  envoy    one Envoy 1.40 with a listener per probe: bare (A), the no-op wasm filter (A_wasm),
           the real filter (B, C), and bench/hostcall-cost configured for one host call N times
           per request; wrk drives each listener in turn, interleaved over repetitions, and
           Envoy's CPU per request gives per call = (cost(N) - cost(0)) / N.
           Writes bench/raw/cost_model_envoy.json
  render   writes the "Cost model" section of bench/results.md from whichever of
           bench/raw/{wasm_cost,callgrind_core,cost_model_envoy}.json exist

Processes, CPU pinning, wrk and /proc CPU accounting are bench.py's.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import bench
from bench import BenchError, ROOT, BENCH, WASM, Bench, Settings, free_port, http_request
from mlflow_calls import task_cpu_ns
from scenarios import REQUEST_PATH, Scenario

RAW = BENCH / "raw"
RESULTS_MD = BENCH / "results.md"
SECTION_BEGIN = "<!-- cost-model:begin (bench/cost_model.py render; kept by report.py) -->"
SECTION_END = "<!-- cost-model:end -->"
WASM_COST_JSON = RAW / "wasm_cost.json"
OPT_LEVELS_JSON = RAW / "wasm_cost_opt_levels.json"
CALLGRIND_JSON = RAW / "callgrind_core.json"
ENVOY_JSON = RAW / "cost_model_envoy.json"

# Probes: (call, N). A large N gives the per-call cost (64 for cheap calls, so that the
# baseline's noise divided by N stays well under a microsecond); N = 1 for the calls whose
# first use may cost extra (a header write that makes Envoy pick the route again, a bulk
# write that needs a read first). Expensive calls use a smaller N to keep the run short,
# printed logs too (each is a line in Envoy's log file), and header_add (its values pile up).
CONNECTION_PROPERTIES = ["connection.mtls", "connection.uri_san_peer_certificate",
                         "connection.subject_peer_certificate", "connection.dns_san_peer_certificate"]
PLAIN_PROBES = [
    ("header_pairs", 32), ("header_get", 64), ("header_add", 32), ("header_replace", 64),
    ("header_remove", 64), ("set_header_map_pairs", 16),
    *[(f"property:{p}", 64) for p in CONNECTION_PROPERTIES],
    ("property:source.address", 64), ("property:request.path", 64), ("property:metadata", 64),
    ("set_property", 64), ("shared_get", 64), ("shared_set", 64), ("metric_increment", 64),
    ("log_filtered", 64), ("log_printed", 8), ("time", 64), ("clear_route_cache", 64),
    ("header_replace", 1), ("set_header_map_pairs", 1), ("clear_route_cache", 1),
    # Exactly the real filter's host calls for one warm request, once: B minus this is the
    # filter's own work in the VM.
    ("replay_warm", 1),
]
TLS_PROBES = [(f"property:{p}", 64) for p in CONNECTION_PROPERTIES] + [("replay_internal", 1)]
# A baseline (the probe filter with N = 0) runs before every this many runs of its listener
# type, and each run is compared with the mean of the baselines just before and after it, so
# slow changes in the machine's load cancel.
BASELINE_EVERY = 5

# How the harness's host-call names map onto probes, to price a request of the real filter.
HOST_CALL_PROBES = {
    "proxy_get_header_map_pairs": "header_pairs",
    "proxy_get_header_map_value": "header_get",
    "proxy_add_header_map_value": "header_add",
    "proxy_replace_header_map_value": "header_replace",
    "proxy_remove_header_map_value": "header_remove",
    "proxy_set_header_map_pairs": "set_header_map_pairs",
    "proxy_set_property": "set_property",
    "proxy_get_shared_data": "shared_get",
    "proxy_set_shared_data": "shared_set",
    "proxy_increment_metric": "metric_increment",
    "proxy_log": "log_filtered",
    "proxy_get_current_time_nanoseconds": "time",
}
REQUEST_HEADER_WRITES = ("header_add", "header_replace", "header_remove", "set_header_map_pairs")
# The identity headers the filter sets for the bench's first key (src/core/output/identity_headers.rs).
WARM_IDENTITY_HEADERS = [("x-user-id", "bench-user-0000"), ("x-api-key-id", "key-bench-0000"),
                         ("x-auth-scopes", "mlflow:read mlflow:write"), ("x-auth-path", "external"),
                         ("x-auth-method", "api_key")]


@dataclass(frozen=True)
class Item:
    """One listener of the cost-model Envoy, and what wrk sends it."""
    id: str
    title: str
    listener: str  # "plain" or "tls"
    kind: str  # "router", "noop", "probe", "filter"
    call: str | None = None
    n: int = 0
    keys: int = 0
    expect_auth_path: str | None = None
    wasm: str | None = None  # the filter's .wasm for kind "filter" (None: the release artifact)

    def scenario(self) -> Scenario:
        return Scenario(self.id, self.title, self.listener, None, self.keys, self.expect_auth_path)


def probe(call: str, n: int, listener: str = "plain") -> Item:
    suffix = "@tls" if listener == "tls" else ""
    # A replay writes the real filter's identity headers, x-auth-path among them.
    auth_path = {"replay_warm": "external", "replay_internal": "internal"}.get(call)
    return Item(f"{call}@{n}{suffix}", f"hostcall-cost: {call} ×{n}", listener, "probe", call, n,
                expect_auth_path=auth_path)


def items(variants: dict[str, Path]) -> list[Item]:
    out = [
        Item("A", "bare Envoy (router only)", "plain", "router"),
        Item("A_wasm", "no-op wasm filter", "plain", "noop"),
        Item("A_hdrs", "bare Envoy, the route adds the warm request's 5 identity headers", "plain", "router+headers",
             expect_auth_path="external"),
        Item("B", "the filter, warm external (1 key)", "plain", "filter", keys=1, expect_auth_path="external"),
        probe("none", 0),
        *[probe(c, n) for c, n in PLAIN_PROBES],
        Item("A_tls", "bare Envoy, TLS listener, client cert", "tls", "router"),
        Item("C", "the filter, internal mTLS", "tls", "filter", expect_auth_path="internal"),
        probe("none", 0, "tls"),
        *[probe(c, n, "tls") for c, n in TLS_PROBES],
    ]
    for label, path in variants.items():
        out.append(Item(f"B[{label}]", f"the filter built with {label}, warm external", "plain", "filter",
                        keys=1, expect_auth_path="external", wasm=str(path)))
    return out


# --------------------------------------------------------------------------------------
# Machine load


def proc_stat() -> dict[str, tuple[int, int]]:
    """Per CPU (and "cpu" for all): (busy, total) jiffies."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if not line.startswith("cpu"):
            continue
        name, *values = line.split()
        v = [int(x) for x in values]
        idle = v[3] + v[4]  # idle + iowait
        out[name] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def busy_between(a: dict, b: dict) -> dict[str, float]:
    return {k: (b[k][0] - a[k][0]) / max(b[k][1] - a[k][1], 1) for k in a if k in b}


# --------------------------------------------------------------------------------------
# The Envoy configs


class CostModelEnvoy:
    def __init__(self, b: Bench, hostcall_wasm: Path, item_list: list[Item]):
        self.b = b
        self.hostcall_wasm = hostcall_wasm
        self.items = item_list
        self.server_ports = {i.id: free_port() for i in item_list}
        self.client_ports = {i.id: free_port() for i in item_list if i.listener == "tls"}
        self.route_checks = {name: free_port() for name in ("route_probe", "route_probe_clear")}

    def pick_new_ports(self) -> None:
        for d in (self.server_ports, self.client_ports, self.route_checks):
            for k in d:
                d[k] = free_port()
        self.b.ports["admin"] = free_port()
        self.b.ports["client_admin"] = free_port()

    def wrk_port(self, item: Item) -> int:
        return self.client_ports[item.id] if item.listener == "tls" else self.server_ports[item.id]

    def _probe_filter(self, call: str, n: int) -> dict:
        filt = deepcopy(self.b.configs.wasm_filter)
        config = filt["typed_config"]["config"]
        config["name"] = config["root_id"] = f"hostcall_cost.{call}.{n}"
        config["vm_config"]["vm_id"] = "bench_hostcall_cost"
        config["vm_config"]["code"]["local"]["filename"] = str(self.hostcall_wasm)
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                   "value": f"{call} {n}"}
        return filt

    def _filter_for(self, item: Item) -> dict | None:
        if item.kind.startswith("router"):
            return None
        if item.kind == "noop":
            return self.b.configs._noop_wasm()
        if item.kind == "probe":
            return self._probe_filter(item.call, item.n)
        filt = self.b.configs._wasm(no_cache=False)
        if item.wasm:
            config = filt["typed_config"]["config"]
            tag = re.sub(r"[^a-z0-9]", "_", item.id.lower())
            config["name"] = config["root_id"] = f"hokusai_auth_{tag}"
            config["vm_config"]["vm_id"] = f"hokusai_auth_{tag}"
            config["vm_config"]["code"]["local"]["filename"] = item.wasm
        return filt

    def _listener(self, template: dict, name: str, port: int, filt: dict | None,
                  route_probe: bool = False, identity_headers: bool = False) -> dict:
        listener = deepcopy(template)
        listener["name"] = name
        listener["address"]["socket_address"]["port_value"] = port
        hcm = self.b.configs._hcm(listener)["typed_config"]
        filters = [f for f in hcm["http_filters"]
                   if not f.get("typed_config", {}).get("@type", "").endswith(bench.WASM_TYPE)]
        if filt is not None:
            filters.insert(len(filters) - 1, filt)
        hcm["http_filters"] = filters
        if identity_headers:
            # What the filter adds to a warm request, added by Envoy's route instead: the cost
            # of carrying five more headers upstream (and, with echo-upstream, back).
            hcm["route_config"]["virtual_hosts"][0]["request_headers_to_add"] = [
                {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
                for k, v in WARM_IDENTITY_HEADERS]
        if route_probe:
            # Answered by Envoy itself when the header reads "rematched": a request that
            # reaches it was routed again after the filter wrote the header.
            vhost = hcm["route_config"]["virtual_hosts"][0]
            vhost["routes"].insert(0, {
                "match": {"prefix": "/", "headers": [
                    {"name": "x-bench-route", "string_match": {"exact": "rematched"}}]},
                "direct_response": {"status": 200, "body": {"inline_string": "rematched"}},
            })
        return listener

    def server(self) -> dict:
        plain = self.b.configs.server(Scenario("A", "", "plain", None, 0, None))
        tls = self.b.configs.server(Scenario("A_tls", "", "tls", None, 0, None))
        templates = {"plain": plain["static_resources"]["listeners"][0],
                     "tls": tls["static_resources"]["listeners"][0]}
        listeners = [self._listener(templates[i.listener], i.id, self.server_ports[i.id], self._filter_for(i),
                                    identity_headers=i.kind == "router+headers")
                     for i in self.items]
        for call, port in self.route_checks.items():
            listeners.append(self._listener(templates["plain"], call, port, self._probe_filter(call, 1),
                                            route_probe=True))
        plain["static_resources"]["listeners"] = listeners
        return plain

    def client(self) -> dict:
        """The client-side Envoy: one plain listener per TLS item, each originating mTLS
        with certs/client.crt to that item's server listener."""
        base = self.b.configs.client()
        listener0 = base["static_resources"]["listeners"][0]
        cluster0 = base["static_resources"]["clusters"][0]
        listeners, clusters = [], []
        for item in self.items:
            if item.listener != "tls":
                continue
            name = f"server_{len(clusters)}"
            listener = deepcopy(listener0)
            listener["name"] = f"client_{item.id}"
            listener["address"]["socket_address"]["port_value"] = self.client_ports[item.id]
            hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
            hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] = name
            cluster = deepcopy(cluster0)
            cluster["name"] = cluster["load_assignment"]["cluster_name"] = name
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            endpoint["address"]["socket_address"]["port_value"] = self.server_ports[item.id]
            listeners.append(listener)
            clusters.append(cluster)
        base["static_resources"]["listeners"] = listeners
        base["static_resources"]["clusters"] = clusters
        return base


# --------------------------------------------------------------------------------------
# The run


@dataclass
class EnvoyRun:
    settings: Settings
    hostcall_wasm: Path
    variants: dict[str, Path]
    reps: int
    duration_s: int
    warmup_s: int
    seed: int
    b: Bench = field(init=False)

    def __post_init__(self):
        self.b = Bench(self.settings)
        self.item_list = items(self.variants)
        self.model = CostModelEnvoy(self.b, self.hostcall_wasm, self.item_list)
        self.server = self.client = None

    def start(self) -> None:
        self.b.start_backends()
        for attempt in range(3):
            try:
                self.server = self.b.start_envoy("cost-model Envoy", self.model.server(), self.b.ports["admin"],
                                                 "cost-model", self.b.envoy_cpus)
                self.client = self.b.start_envoy("client-side Envoy", self.model.client(),
                                                 self.b.ports["client_admin"], "cost-model-client", self.b.load_cpus)
                return
            except BenchError as e:
                self.b.procs.stop_all()
                if attempt == 2 or "in use" not in str(e):
                    raise
                print("  (a port was taken meanwhile; retrying on new ports)")
                self.model.pick_new_ports()
                self.b.start_backends()

    def route_cache_checks(self) -> dict:
        """Does a request-header write make Envoy 1.40 pick the route again? And does
        Envoy's `clear_route_cache` foreign function?"""
        out = {}
        for call, port in self.model.route_checks.items():
            status, body = http_request(port, "GET", REQUEST_PATH)
            out[call] = {"status": status, "rematched": body == b"rematched",
                         "body": body[:80].decode(errors="replace")}
        return out

    def check(self, item: Item) -> dict:
        return self.b.check_request(item.scenario(), self.model.wrk_port(item), self.server)

    def measure(self, item: Item, rep: int, duration_s: int, tag: str) -> dict:
        port = self.model.wrk_port(item)
        out = self.settings.work_dir / f"wrk-{tag}-{re.sub(r'[^A-Za-z0-9_.@-]', '_', item.id)}.json"
        load0, stat0 = Path("/proc/loadavg").read_text().split()[0], proc_stat()
        ticks0, ns0 = self.server.cpu_seconds(), task_cpu_ns(self.server.pid)
        w = self.b.wrk(item.scenario(), port, duration_s, out)
        ticks1, ns1, stat1 = self.server.cpu_seconds(), task_cpu_ns(self.server.pid), proc_stat()
        if not self.server.alive():
            raise BenchError(f"the cost-model Envoy died during {item.id}:\n{self.server.log_tail()}")
        requests = max(w["requests"], 1)
        cpu_s = (ns1 - ns0) / 1e9
        return {
            "item": item.id, "rep": rep, "requests": w["requests"], "rps": w["rps"],
            "errors": sum(w["errors"].values()),
            "envoy_cpu_s": cpu_s,
            "envoy_cpu_s_ticks": ticks1 - ticks0,
            "envoy_us_per_request": cpu_s * 1e6 / requests,
            "envoy_cpu_share": cpu_s / (w["duration_us"] / 1e6),
            "cpu_busy": busy_between(stat0, stat1),
            "loadavg_1m_at_start": float(load0),
        }

    def schedule(self, rep: int) -> list[Item]:
        """Every item once, shuffled, with a baseline of the item's listener type before
        every BASELINE_EVERY items of that type and one after the last."""
        baseline = {i.listener: i for i in self.item_list if i.call == "none"}
        others = [i for i in self.item_list if i.call != "none"]
        random.Random(self.seed + rep).shuffle(others)
        order, since = [], {k: BASELINE_EVERY for k in baseline}
        for item in others:
            if since[item.listener] >= BASELINE_EVERY:
                order.append(baseline[item.listener])
                since[item.listener] = 0
            order.append(item)
            since[item.listener] += 1
        order += list(baseline.values())
        return order

    def run(self) -> dict:
        self.start()
        print("route-cache checks ...", end="", flush=True)
        route = self.route_cache_checks()
        print(" header write re-matches the route: " + ("yes" if route["route_probe"]["rematched"] else "no")
              + "; write + clear_route_cache: " + ("yes" if route["route_probe_clear"]["rematched"] else "no"))
        checks = {}
        print(f"warm-up: {len(self.item_list)} listeners × {self.warmup_s}s ...", flush=True)
        for item in self.item_list:
            checks[item.id] = self.check(item)
            self.measure(item, 0, self.warmup_s, "warmup")
        self.fail_on_probe_errors()
        runs = []
        for rep in range(1, self.reps + 1):
            order = self.schedule(rep)
            t0 = time.monotonic()
            for k, item in enumerate(order):
                r = self.measure(item, rep, self.duration_s, f"r{rep}-{k}")
                r["seq"] = len(runs)
                runs.append(r)
            load = Path("/proc/loadavg").read_text().split()[:3]
            print(f"[rep {rep}/{self.reps}] {len(order)} runs in {time.monotonic() - t0:.0f}s; "
                  f"load average {' '.join(load)}", flush=True)
        self.fail_on_probe_errors()
        return {"route_cache": route, "checks": checks, "runs": runs}

    def fail_on_probe_errors(self) -> None:
        bad = [line for line in self.server.log.read_text(errors="replace").splitlines()
               if "hostcall-cost:" in line and ("failed" in line or "bad configuration" in line)]
        if bad:
            raise BenchError("a probe's host call failed:\n  " + "\n  ".join(bad[:10]))


def summarize(raw: dict) -> dict:
    """Each run relative to the baselines of its listener type just before and after it;
    then per repetition: per call, and differences between listeners."""
    runs = [r for r in raw["runs"] if r["rep"] > 0]
    kinds = {i["id"]: i for i in raw["items"]}
    baseline_id = {i["listener"]: i["id"] for i in raw["items"] if i["call"] == "none"}
    reps = sorted({r["rep"] for r in runs})

    def local_baseline(r: dict) -> float | None:
        bid = baseline_id[kinds[r["item"]]["listener"]]
        same = [x for x in runs if x["item"] == bid and x["rep"] == r["rep"]]
        before = [x for x in same if x["seq"] < r["seq"]]
        after = [x for x in same if x["seq"] > r["seq"]]
        near = ([before[-1]] if before else []) + ([after[0]] if after else [])
        return statistics.mean(x["envoy_us_per_request"] for x in near) if near else None

    rel: dict[str, dict[int, list[float]]] = {}
    for r in runs:
        if kinds[r["item"]]["call"] == "none":
            continue
        b = local_baseline(r)
        if b is not None:
            rel.setdefault(r["item"], {}).setdefault(r["rep"], []).append(r["envoy_us_per_request"] - b)
    rel_rep = {k: {rep: statistics.median(v) for rep, v in d.items()} for k, d in rel.items()}

    def stats(values: list[float]) -> dict:
        return {"median": statistics.median(values), "min": min(values), "max": max(values),
                "values": values} if values else {}

    items_out = {}
    for item in raw["items"]:
        rs = [r for r in runs if r["item"] == item["id"]]
        items_out[item["id"]] = {
            **item,
            "us_per_request": stats([r["envoy_us_per_request"] for r in rs]),
            "over_baseline_us": stats(list(rel_rep.get(item["id"], {}).values())),
            "rps": stats([r["rps"] for r in rs]),
            "errors": sum(r["errors"] for r in rs),
            "envoy_cpu_share": stats([r["envoy_cpu_share"] for r in rs]),
        }
    calls = {}
    for item in raw["items"]:
        if item["kind"] != "probe" or item["n"] == 0:
            continue
        d = rel_rep.get(item["id"], {})
        calls[item["id"]] = {"call": item["call"], "n": item["n"], "listener": item["listener"],
                             "per_rep": {rep: v / item["n"] for rep, v in d.items()}}
        calls[item["id"]]["per_call_us"] = stats(list(calls[item["id"]]["per_rep"].values()))
    # The first call's extra over the marginal one (N = 1 probes): one-off work.
    for c in calls.values():
        if c["n"] != 1:
            continue
        marginal = next((m["per_rep"] for m in calls.values()
                         if m["call"] == c["call"] and m["listener"] == c["listener"] and m["n"] > 1), {})
        c["first_call_extra_us"] = stats([c["per_rep"][r] - marginal[r] for r in c["per_rep"] if r in marginal])
    diffs = {}
    pairs = [("A_wasm − A (any wasm filter)", "A_wasm", "A"), ("B − A (filter, warm external)", "B", "A"),
             ("B − A_wasm (the filter's own work)", "B", "A_wasm"), ("C − A_tls (filter, internal)", "C", "A_tls"),
             ("hostcall-cost N = 0 − A_wasm (two no-op filters)", None, "A_wasm"),
             ("A_hdrs − A: five more headers upstream and echoed back, no filter", "A_hdrs", "A"),
             ("replay_warm − N = 0: the warm request's host calls, once each", "replay_warm@1", None),
             ("B − replay_warm: the filter's own work in the VM, warm", "B", "replay_warm@1"),
             ("replay_internal − N = 0 (TLS): the internal request's host calls", "replay_internal@1@tls", None),
             ("C − replay_internal: the filter's own work in the VM, internal", "C", "replay_internal@1@tls")]
    pairs += [(f"{i['id']} − B", i["id"], "B") for i in raw["items"] if i["id"].startswith("B[")]
    zero = {r: 0.0 for r in reps}
    for label, x, y in pairs:
        px = rel_rep.get(x, {}) if x else zero
        py = rel_rep.get(y, {}) if y else zero
        vals = [px[r] - py[r] for r in reps if r in px and r in py]
        if vals:
            diffs[label] = stats(vals)
    baseline_values = [r["envoy_us_per_request"] for r in runs if r["item"] == baseline_id["plain"]]
    # Noise: how far one baseline run lands from the mean of its neighbours.
    jitter = [r["envoy_us_per_request"] - b for r in runs if r["item"] == baseline_id["plain"]
              for b in [statistics.mean([x["envoy_us_per_request"] for x in runs
                                         if x["item"] == r["item"] and x["rep"] == r["rep"]
                                         and x["seq"] != r["seq"] and abs(x["seq"] - r["seq"]) <= 2 * BASELINE_EVERY]
                                        or [r["envoy_us_per_request"]])]]
    noise = {
        "baseline_runs": len(baseline_values),
        "baseline_median_us": statistics.median(baseline_values) if baseline_values else None,
        "baseline_stdev_us": statistics.stdev(baseline_values) if len(baseline_values) > 1 else None,
        "baseline_jitter_us": statistics.pstdev(jitter) if len(jitter) > 1 else None,
        "loadavg_1m": stats([r["loadavg_1m_at_start"] for r in runs]),
        "other_load_on_envoy_cpu": None,
        "busy_other_cpus": None,
    }
    if raw.get("cpus"):
        cpu_name = f"cpu{raw['cpus']['envoy'][0]}"
        noise["other_load_on_envoy_cpu"] = stats([max(r["cpu_busy"].get(cpu_name, 0) - r["envoy_cpu_share"], 0)
                                                  for r in runs])
        rest = [f"cpu{c}" for c in raw["cpus"]["others"]]
        noise["busy_other_cpus"] = stats([statistics.mean(r["cpu_busy"].get(c, 0) for c in rest) for r in runs])
    return {"items": items_out, "calls": calls, "diffs": diffs, "noise": noise}


def price_request(path: dict, summary: dict, listener: str) -> dict:
    """A request of the real filter (from wasm_cost.json) priced with the probes' costs."""
    calls = summary["calls"]

    def cost(call: str) -> float | None:
        want = listener if call.startswith("property:connection.") else "plain"
        c = next((c for c in calls.values() if c["call"] == call and c["listener"] == want and c["n"] > 1), None)
        return c["per_call_us"]["median"] if c and c.get("per_call_us") else None

    rows, unpriced = [], []
    for name, count in sorted(path["host_calls"].items()):
        if name == "proxy_get_property":
            for prop, n in sorted(path["property_reads"].items()):
                rows.append((f"get_property {prop}", n, cost(f"property:{prop}")))
            continue
        probe_name = HOST_CALL_PROBES.get(name)
        if probe_name is None:
            unpriced.append(f"{name} ×{count}")
            continue
        rows.append((name.removeprefix("proxy_"), count, cost(probe_name)))
    writes = [HOST_CALL_PROBES[n] for n in path["host_calls"] if HOST_CALL_PROBES.get(n) in REQUEST_HEADER_WRITES]
    one_off = None
    if writes:
        c = calls.get(f"{writes[0]}@1", {}).get("first_call_extra_us")
        one_off = c["median"] if c else None
    total = sum(n * c for _, n, c in rows if c is not None) + (one_off or 0)
    return {"rows": rows, "unpriced": unpriced, "first_write_extra_us": one_off, "host_calls_us": total}


def main_envoy(a: argparse.Namespace) -> int:
    s = Settings(
        smoke=False, reps=a.reps, duration_s=a.duration, warmup_s=a.warmup, connections=a.connections,
        threads=1, wrk_timeout_s=2, paced_s=1, paced_connections=1, paced_delay_ms=0,
        scenarios=[], out_dir=BENCH, work_dir=ROOT / "bench" / "raw" / "tmp" / "cost-model",
        bin_dir=a.bin_dir.resolve(), envoy=a.envoy, noop_wasm=a.noop_wasm.resolve(), pin=a.pin,
    )
    variants = {}
    for spec in a.variant or []:
        label, _, path = spec.partition("=")
        variants[label] = Path(path).resolve()
    missing = [str(p) for p in [a.hostcall_wasm, s.noop_wasm, WASM, s.envoy, *variants.values(),
                                s.bin_dir / "dev-auth-service", s.bin_dir / "echo-upstream"] if not Path(p).exists()]
    if missing or not shutil.which("wrk"):
        print("cost-model envoy: missing: " + ", ".join(missing + ([] if shutil.which("wrk") else ["wrk"]))
              + " (make cost-model-envoy builds them)", file=sys.stderr)
        return 1
    if s.work_dir.exists():
        shutil.rmtree(s.work_dir)
    s.work_dir.mkdir(parents=True)
    run = EnvoyRun(s, a.hostcall_wasm.resolve(), variants, a.reps, a.duration, a.warmup, a.seed)
    n_runs = len(run.schedule(1))
    est = len(run.item_list) * (a.warmup + 0.6) + a.reps * n_runs * (a.duration + 0.5)
    machine = bench.machine_info(s)
    print(f"cost-model envoy: {len(run.item_list)} listeners, {a.reps} repetitions × {n_runs} runs of {a.duration}s "
          f"(wrk -c {a.connections}); about {est / 60:.1f} min. Load average now: "
          f"{' '.join(machine['loadavg_at_start'])}; logs in {s.work_dir}", flush=True)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        measured = run.run()
    except BenchError as e:
        print(f"\ncost-model envoy: FAILED: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ncost-model envoy: interrupted", file=sys.stderr)
        return 130
    finally:
        run.b.procs.stop_all()
    machine["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    raw = {
        "settings": {"reps": a.reps, "duration_s": a.duration, "warmup_s": a.warmup, "connections": a.connections,
                     "seed": a.seed, "request_path": REQUEST_PATH, "hostcall_wasm": str(a.hostcall_wasm),
                     "variants": {k: str(v) for k, v in variants.items()}},
        "cpus": {"envoy": sorted(run.b.envoy_cpus), "others": sorted(run.b.load_cpus)} if run.b.envoy_cpus else None,
        "machine": machine,
        "items": [vars(i) for i in run.item_list],
        **measured,
    }
    raw["summary"] = summarize(raw)
    RAW.mkdir(parents=True, exist_ok=True)
    ENVOY_JSON.write_text(json.dumps(raw, indent=1) + "\n")
    print(f"\nwrote {ENVOY_JSON}")
    errors = {k: v["errors"] for k, v in raw["summary"]["items"].items() if v["errors"]}
    if errors:
        print(f"WARNING: non-2xx replies or socket errors: {errors}", file=sys.stderr)
    print()
    print("\n".join(envoy_markdown(raw, load_json(WASM_COST_JSON))))
    render()
    return 0


# --------------------------------------------------------------------------------------
# native: the core's warm decision under callgrind


def cargo_bench_executable(name: str) -> Path:
    out = subprocess.run(["cargo", "bench", "--profile", "ci", "--bench", name, "--no-run",
                          "--message-format=json"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchError(f"cargo bench --bench {name} --no-run failed:\n{out.stderr[-3000:]}")
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == name:
            return Path(msg["executable"])
    raise BenchError(f"cargo did not report the {name} bench executable")


ANNOTATE_LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+([^:]*):(.*?)(?:\s+\[[^\]]*\])?\s*$")

# Self cost of each function, grouped: what a warm decision spends its instructions on.
CATEGORIES = [
    ("SHA-256 of the key", re.compile(r"sha2::|digest::|KeyDigest::of|::digest")),
    ("access-log record (JSON)", re.compile(r"json_writer::|access_log")),
    ("reading the request (pairs buffer, facts)", re.compile(r"pairs::|request::facts::")),
    ("allocator (malloc, free)", re.compile(r"malloc|free|realloc|__rust_alloc|__rust_dealloc|__rdl_|__rust_no_alloc")),
    ("String and Vec clones (the verdict copied out of the cache, header values)",
     re.compile(r"as core::clone::Clone>::clone")),
    ("copies (memcpy, memmove, memcmp)", re.compile(r"memcpy|memmove|memset|memcmp|bcmp")),
    ("per-worker cache lookup (LocalVerdicts, hash map)", re.compile(r"local_copies::|LocalVerdicts|hashbrown|Hasher")),
    ("identity headers (admit, scopes join)", re.compile(r"admit|join|to_string|fmt::|identity_headers::|IdentityHeaders")),
    ("credential parsing (find_credential, JWT shape)", re.compile(r"credential::|text::")),
    ("path and UTF-8 scans (memchr, from_utf8)", re.compile(r"memchr|from_utf8")),
    ("scope check (required_access, is_granted_by)", re.compile(r"scope::|required_access|is_granted_by")),
    ("the rest of the decision", re.compile(r"decide|policy::|identity::")),
    ("the measuring loop", re.compile(r"warm_requests")),
]


def callgrind_entries(out_file: Path, inclusive: bool) -> list[tuple[int, str]]:
    text = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100",
                           str(out_file)], capture_output=True, text=True, check=True).stdout
    entries: dict[str, int] = {}
    started = False
    for line in text.splitlines():
        if "file:function" in line:
            started = True
            continue
        m = ANNOTATE_LINE.match(line) if started else None
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = m.group(3).strip()
        entries[name] = entries.get(name, 0) + int(m.group(1).replace(",", ""))
    return sorted(((v, k) for k, v in entries.items()), reverse=True)


def main_native(a: argparse.Namespace) -> int:
    if not shutil.which("valgrind"):
        print("cost-model native: valgrind is missing (apt-get install -y valgrind)", file=sys.stderr)
        return 1
    try:
        exe = cargo_bench_executable("core_callgrind")
    except BenchError as e:
        print(f"cost-model native: {e}", file=sys.stderr)
        return 1
    native = json.loads(subprocess.run([str(exe), "20000"], capture_output=True, text=True, check=True).stdout)
    work = ROOT / "bench" / "raw" / "tmp" / "callgrind"
    work.mkdir(parents=True, exist_ok=True)
    out_file = work / "callgrind.out"
    n = a.requests
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
                    "--toggle-collect=*warm_requests*", str(exe), str(n)],
                   capture_output=True, text=True, check=True)
    inclusive = callgrind_entries(out_file, True)
    self_cost = callgrind_entries(out_file, False)
    total = next(v for v, k in inclusive if k.endswith("warm_requests"))
    top = [(v, k) for v, k in inclusive if v < total][:a.top]
    cats: dict[str, int] = {}
    for v, k in self_cost:
        label = next((c for c, rx in CATEGORIES if rx.search(k)), "other")
        cats[label] = cats.get(label, 0) + v
    result = {
        "what": "hokusai_auth_filter::core for a key in the per-worker copy: RequestFacts::from_pairs, "
                "Policy::decide, the identity headers and the access-log record "
                "(native x86-64, profile ci = opt-level 2; SHA-256 is sha2's portable code under valgrind)",
        "requests": n,
        "instructions_per_request": total / n,
        "allocations_per_request": native["allocations_per_request"],
        "bytes_allocated_per_request": native["bytes_per_request"],
        "native_ns_per_request": native["native_ns_per_request"],
        "top_inclusive": [{"function": k, "instructions_per_request": v / n, "share": v / total} for v, k in top],
        "by_category_self": [{"category": c, "instructions_per_request": v / n, "share": v / total}
                             for c, v in sorted(cats.items(), key=lambda kv: -kv[1]) if v >= 0.005 * total],
    }
    RAW.mkdir(parents=True, exist_ok=True)
    CALLGRIND_JSON.write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(native_markdown(result)))
    print(f"\nwrote {CALLGRIND_JSON}")
    return 0


# --------------------------------------------------------------------------------------
# Markdown


def load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def fmt_calls(calls: dict) -> str:
    return ", ".join(f"{k.removeprefix('proxy_')}" + (f" ×{v}" if v != 1 else "") for k, v in sorted(calls.items()))


def wasm_markdown(w: dict, opt: dict | None) -> list[str]:
    lines = [
        "### In the VM: wasm instructions per request",
        "",
        f"`make cost-model` (benches/wasm_cost.rs): the release `.wasm` ({w['wasm_bytes']:,} bytes) in the "
        "wasmtime proxy-wasm host the tests use, envoy.yaml's plugin configuration, a realistic MLflow client "
        "request (10 headers, pseudo-headers and Envoy's own included, plus the key). Fuel is wasmtime's count of wasm instructions executed (one per instruction; a few, "
        "such as `nop`, are free, and a bulk `memory.copy` counts as one whatever its length), over the whole "
        f"stream (context create, headers, response headers, log, done, delete); median of {w['requests_per_path']} "
        "requests after a warm-up. Fuel is deterministic: rerunning gives the same numbers; min–max shows where "
        "requests of one path differ (a hash map growing). Host calls are the filter's calls into Envoy; "
        "guest allocs are the values the host copied into the VM through its allocator.",
        "",
        "| path | fuel / request | min–max | of which on_request_headers | host calls | which | guest allocs |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for p in w["paths"]:
        lines.append(f"| {p['name']}: {p['what']} | {p['fuel_median']:,} | {p['fuel_min']:,}–{p['fuel_max']:,} | "
                     f"{p['fuel_by_export'].get('proxy_on_request_headers', 0):,} | {p['host_calls_total']} | "
                     f"{fmt_calls(p['host_calls'])} | {p['guest_allocations']} |")
    guest = w.get("guest_fuel_per_host_call") or {}
    if guest:
        warm = next((p for p in w["paths"] if p["name"] == "warm"), None)
        lines += ["", "The guest's side of each host call (bench/hostcall-cost in the same harness, the same request; "
                  "fuel per call: the SDK wrapper and, for a value Envoy returns, its allocation and decoding in "
                  "the VM; this also runs, in V8, inside the Envoy-side per-call costs below):", "",
                  "| host call | fuel per call |", "|---|---:|"]
        for call, fuel in guest.items():
            label = "replay_warm (all of a warm request's host calls, once)" if call == "replay_warm" else call
            lines.append(f"| {label} | {fuel:,} |")
        if warm and "replay_warm" in guest:
            base = w.get("probe_request_fuel", 0)
            own = warm["fuel_median"] - base - guest["replay_warm"]
            lines += ["", f"Of the warm request's {warm['fuel_median']:,} instructions, {guest['replay_warm']:,} are "
                      f"its host calls' guest side (the SDK), {base:,} what the SDK does for any request (the no-op "
                      f"probe's), and {own:,} the filter's own logic."]
    if opt:
        lines += ["", "Warm external request by build of the filter (`make cost-model-opt-levels`; the committed "
                  "profile is `3`; nothing else changed):", "",
                  "| opt-level | .wasm bytes | fuel / request | on_request_headers |", "|---|---:|---:|---:|"]
        for b in opt["builds"]:
            lines.append(f"| {b['label']} | {b['bytes']:,} | {b['fuel']:,} | {b['fuel_on_request_headers']:,} |")
    return lines


def native_markdown(c: dict) -> list[str]:
    lines = [
        "### The warm decision natively (callgrind)",
        "",
        f"`make cost-model` (benches/core_callgrind.rs): {c['what']}. "
        f"{c['instructions_per_request']:,.0f} instructions, {c['allocations_per_request']:.0f} heap allocations "
        f"({c['bytes_allocated_per_request']:.0f} bytes) per request. A second view of where the core's share of the "
        "in-VM work goes; the adapter (header map decoding, host-call wrappers) is not in it.",
        "",
        "| spent on (self cost, grouped) | instructions / request | share |",
        "|---|---:|---:|",
    ]
    for row in c["by_category_self"]:
        lines.append(f"| {row['category']} | {row['instructions_per_request']:,.0f} | {row['share']:.0%} |")
    lines += ["", "| function (inclusive) | instructions / request | share |", "|---|---:|---:|"]
    for row in c["top_inclusive"]:
        name = row["function"].replace("|", "\\|")
        lines.append(f"| `{name}` | {row['instructions_per_request']:,.0f} | {row['share']:.0%} |")
    return lines


def us(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def spread(st: dict, digits: int = 1) -> str:
    return f"{st['min']:.{digits}f} to {st['max']:.{digits}f}" if st else "–"


def envoy_markdown(raw: dict, wasm: dict | None) -> list[str]:
    s = raw["summary"]
    m = raw["machine"]
    st = raw["settings"]
    noise = s["noise"]
    it = s["items"]
    route = raw["route_cache"]
    lines = [
        "### In Envoy: CPU per request and per host call",
        "",
        f"`make cost-model-envoy` (bench/cost_model.py envoy) on {m['date_utc']}, commit {m['git_commit']}: one "
        f"Envoy 1.40 (`--concurrency 1`, pinned to CPU {raw['cpus']['envoy'] if raw.get('cpus') else '(none)'}) with "
        "a listener per row, each the production listener with one HTTP filter changed; wrk "
        f"(`-c {st['connections']}`, {st['duration_s']} s per run, same Lua script as `make bench`) drives one "
        f"listener at a time, every listener once per repetition in a shuffled order with the N = 0 baseline of "
        f"its listener type before every {BASELINE_EVERY}th run, {st['reps']} repetitions. Envoy CPU µs per request "
        "from /proc (all threads' schedstat) over each run, compared with the mean of the baselines just before and "
        "after it. The probe rows use bench/hostcall-cost, which makes one host call N times in "
        "on_http_request_headers and nothing else: per call = (cost(N) − baseline) / N; the replay rows make "
        "exactly the real filter's host calls for one request, once. Median and range over the repetitions. A first-call extra (N = 1 rows) is "
        "cost(1) − cost(0) − the per-call cost: one-off work such as Envoy picking the route again.",
        "",
        f"Machine during the run: load average {noise['loadavg_1m']['median']:.1f} (1 min, median; "
        f"{spread(noise['loadavg_1m'])}) at start {' '.join(m['loadavg_at_start'])}, at end "
        f"{' '.join(m.get('loadavg_at_end', []))}.",
    ]
    if noise.get("other_load_on_envoy_cpu"):
        o, r = noise["other_load_on_envoy_cpu"], noise["busy_other_cpus"]
        lines[-1] += (f" Other processes took {o['median']:.0%} of Envoy's CPU (median; up to {o['max']:.0%}); "
                      f"the other CPU(s) were {r['median']:.0%} busy.")
    if noise.get("baseline_jitter_us") is not None:
        j = noise["baseline_jitter_us"]
        lines[-1] += (f" Noise: the plain N = 0 baseline ran {noise['baseline_runs']} times at "
                      f"{noise['baseline_median_us']:.1f} µs per request (median; standard deviation "
                      f"{noise['baseline_stdev_us']:.1f} µs over the whole run, {j:.1f} µs from its neighbours), so one "
                      f"run's difference from its baselines is good to about ±{j * 1.2:.0f} µs per request: "
                      f"±{j * 1.2 / 64:.2f} µs per call at N = 64, ±{j * 1.2 / 8:.1f} at N = 8, before the "
                      "median over repetitions.")
    lines += [
        "",
        "Route cache: a request-header write from a wasm filter "
        + ("**does** make Envoy 1.40 pick the route again" if route["route_probe"]["rematched"]
           else "**does not** make Envoy 1.40 pick the route again")
        + " (a probe route that matches the written header "
        + ("answered" if route["route_probe"]["rematched"] else "was not chosen")
        + "); the same write followed by Envoy's `clear_route_cache` foreign function "
        + ("does." if route["route_probe_clear"]["rematched"] else "does not."),
        "",
        "| listener | what | Envoy CPU µs / request | range | over its N = 0 baseline | range | req/s | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for iid in ["A", "A_wasm", "A_hdrs", "none@0", "B", "replay_warm@1", *[k for k in it if k.startswith("B[")], "A_tls", "none@0@tls", "C", "replay_internal@1@tls"]:
        if iid not in it or not it[iid]["us_per_request"]:
            continue
        x = it[iid]
        ob = x.get("over_baseline_us") or {}
        lines.append(f"| {iid} | {x['title']} | {us(x['us_per_request']['median'])} | {spread(x['us_per_request'])} | "
                     f"{'' if not ob else format(ob['median'], '+.1f')} | {spread(ob) if ob else ''} | "
                     f"{x['rps']['median']:,.0f} | {x['errors']} |")
    lines += ["", "| difference (same repetition) | µs / request | range |", "|---|---:|---:|"]
    for label, d in s["diffs"].items():
        lines.append(f"| {label} | {d['median']:+.1f} | {spread(d)} |")
    lines += ["", "| host call | listener | N | Envoy CPU µs per call | range over repetitions | first-call extra µs |",
              "|---|---|---:|---:|---:|---:|"]
    for cid, c in sorted(s["calls"].items(), key=lambda kv: (kv[1]["listener"], kv[1]["call"], -kv[1]["n"])):
        if not c["per_call_us"]:
            continue
        extra = c.get("first_call_extra_us")
        lines.append(f"| {c['call']} | {c['listener']} | {c['n']} | {c['per_call_us']['median']:.2f} | "
                     f"{spread(c['per_call_us'], 2)} | {us(extra['median'], 1) + ' (' + spread(extra) + ')' if extra else ''} |")
    if wasm:
        for name, listener in (("warm", "plain"), ("internal", "tls")):
            path = next((p for p in wasm["paths"] if p["name"] == name), None)
            if not path:
                continue
            priced = price_request(path, s, listener)
            lines += ["", f"**{path['name']}: {path['what']}**, priced: its host calls (counted in the wasmtime "
                      "harness) × the per-call costs above.", "",
                      "| host call | count | µs each | µs |", "|---|---:|---:|---:|"]
            for label, n, c in priced["rows"]:
                lines.append(f"| {label} | {n} | {us(c, 2)} | {us(None if c is None else n * c, 1)} |")
            if priced["first_write_extra_us"] is not None:
                lines.append(f"| first request-header write's extra | 1 | | {priced['first_write_extra_us']:.1f} |")
            lines.append(f"| **host calls, total** | {path['host_calls_total']} | | **{priced['host_calls_us']:.1f}** |")
            if priced["unpriced"]:
                lines.append(f"| not priced: {', '.join(priced['unpriced'])} | | | |")
            own_us, own_label = own_work(s["diffs"], name)
            if own_us is not None:
                rest = own_us - priced["host_calls_us"]
                lines += ["", f"Measured {own_label}: {own_us:.1f} µs. Host calls account for "
                          f"{priced['host_calls_us']:.1f} µs; the remaining {rest:.1f} µs is the VM running the "
                          f"filter's {path['fuel_median']:,} wasm instructions plus whatever the probes do not "
                          f"isolate (≈ {rest * 1000 / path['fuel_median']:.2f} ns per wasm instruction if it were "
                          "all execution)."]
    return lines


def own_work(diffs: dict, path_name: str) -> tuple[float | None, str]:
    """The filter's own Envoy CPU per request on a path, over the fixed cost of any wasm filter."""
    if path_name == "warm":
        d = diffs.get("B − A_wasm (the filter's own work)")
        return (d["median"] if d else None), "B − A_wasm"
    c, fixed = diffs.get("C − A_tls (filter, internal)"), diffs.get("A_wasm − A (any wasm filter)")
    return (c["median"] - fixed["median"] if c and fixed else None), "(C − A_tls) − (A_wasm − A)"


def render() -> None:
    wasm, opt, cg, env = (load_json(p) for p in (WASM_COST_JSON, OPT_LEVELS_JSON, CALLGRIND_JSON, ENVOY_JSON))
    if not (wasm or cg or env):
        print("cost-model render: no raw data yet (make cost-model / make cost-model-envoy)", file=sys.stderr)
        return
    lines = [SECTION_BEGIN, "## Cost model", "",
             "Where a request's cost goes, measured in parts (bench/README.md, \"Cost model\"; raw data in "
             "[raw/wasm_cost.json](raw/wasm_cost.json), [raw/callgrind_core.json](raw/callgrind_core.json), "
             "[raw/cost_model_envoy.json](raw/cost_model_envoy.json)). Regenerate with `make cost-model` and "
             "`make cost-model-envoy`.", ""]
    if wasm:
        lines += wasm_markdown(wasm, opt) + [""]
    if cg:
        lines += native_markdown(cg) + [""]
    if env:
        lines += envoy_markdown(env, wasm) + [""]
    lines.append(SECTION_END)
    section = "\n".join(lines)
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
    if SECTION_BEGIN in text and SECTION_END in text:
        head, rest = text.split(SECTION_BEGIN, 1)
        tail = rest.split(SECTION_END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS_MD.write_text(text)
    print(f"cost-model: wrote the \"Cost model\" section of {RESULTS_MD}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("envoy", help="Envoy CPU per host call (see the module docstring)")
    target_dir = ROOT / "target"
    e.add_argument("--reps", type=int, default=4)
    e.add_argument("--duration", type=bench.seconds, default=2, help="seconds per measured run (default 2)")
    e.add_argument("--warmup", type=bench.seconds, default=1, help="seconds per listener, once (default 1)")
    e.add_argument("--connections", type=int, default=16)
    e.add_argument("--seed", type=int, default=8)
    e.add_argument("--bin-dir", type=Path, default=target_dir / "release")
    e.add_argument("--envoy", type=Path, default=ROOT / ".venv" / "bin" / "envoy")
    e.add_argument("--noop-wasm", type=Path,
                   default=target_dir / "bench-noop" / "wasm32-wasip1" / "release" / "bench_noop_filter.wasm")
    e.add_argument("--hostcall-wasm", type=Path,
                   default=target_dir / "bench-hostcall" / "wasm32-wasip1" / "release" / "bench_hostcall_cost.wasm")
    e.add_argument("--variant", action="append", metavar="LABEL=PATH",
                   help="also measure the filter built another way (e.g. s=target/opt-s/...wasm)")
    e.add_argument("--no-pin", dest="pin", action="store_false")
    n = sub.add_parser("native", help="callgrind of the core's warm decision")
    n.add_argument("--requests", type=int, default=2000)
    n.add_argument("--top", type=int, default=14)
    sub.add_parser("render", help="write the Cost model section of bench/results.md")
    a = p.parse_args()
    if a.cmd == "envoy":
        return main_envoy(a)
    if a.cmd == "native":
        code = main_native(a)
        return code
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
