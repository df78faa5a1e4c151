"""The filter's cost in production terms: MLflow's own time per call next to what the filter adds.

`make bench` runs this after its scenarios (results.md, "In production terms");
`make bench-mlflow` runs it alone and prints the table (nothing in bench/ is rewritten).

Real MLflow (`.venv/bin/mlflow server`, sqlite and a proxied artifacts directory in a temp
dir, 127.0.0.1 on a free port, job execution off) answers a few typical client calls, one
at a time on a kept-alive connection, by three routes: directly, through bare Envoy, and
through Envoy with the filter (envoy.yaml's configuration, a warm key). Each batch of one
call by one route is measured for its wall time per request and the CPU time MLflow (its
whole process group) and the Envoy on that route spent per request; rounds interleave the
routes so slow drift in the machine's load falls on all three. What the filter adds is the
filter route's Envoy CPU per request minus the bare route's, round by round.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from scenarios import KEY_FORMAT, Scenario

# A few calls an MLflow client makes all the time: a search, a read by id, a write.
# {run_id} and {step} are filled in per request.
@dataclass(frozen=True)
class Call:
    name: str
    method: str
    path: str
    body: str | None = None


CALLS = [
    Call("experiments/search", "POST", "/api/2.0/mlflow/experiments/search", '{{"max_results": 100}}'),
    Call("runs/get", "GET", "/api/2.0/mlflow/runs/get?run_id={run_id}"),
    Call("runs/log-metric", "POST", "/api/2.0/mlflow/runs/log-metric",
         '{{"run_id": "{run_id}", "key": "loss", "value": 0.25, "timestamp": {timestamp}, "step": {step}}}'),
]
ROUTES = ["direct", "bare", "filter"]
DEFAULT_ROUNDS = 5
DEFAULT_PER_BATCH = 40
WARMUP_PER_BATCH = 3
# Seconds with no requests at all, to tell the Envoys' cost per second (timers; the filter's
# once-a-second tick) from their cost per request.
IDLE_S = 2

# The Python client's headers, with the bench's first key (read+write, no rate limit).
HEADERS = {"User-Agent": "mlflow-python-client/3.17.2", "Accept-Encoding": "identity",
           "Authorization": "Bearer " + KEY_FORMAT % 0}


def task_cpu_ns(pid: int) -> int:
    """CPU time of all of a process's threads, in ns (/proc/PID/task/*/schedstat): the same
    accounting as bench.py's Proc.cpu_seconds, at the resolution a two-second run on a shared
    CPU needs (clock ticks are 10 ms)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def group_cpu_ns(pgid: int) -> int:
    """CPU time of every live process in a process group (MLflow's server and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the command's closing parenthesis: state, ppid, pgrp, ...
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                total += task_cpu_ns(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return total


def median_range(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


class MlflowCalls:
    def __init__(self, b, rounds: int, per_batch: int) -> None:
        # b: a bench.Bench whose backends (the dev auth service) are running.
        self.b = b
        self.rounds = rounds
        self.per_batch = per_batch
        self.step = 0
        self.run_id = ""

    # -- processes

    def start_mlflow(self, tmp: Path):
        import bench
        mlflow = bench.ROOT / ".venv" / "bin" / "mlflow"
        if not mlflow.exists():
            raise bench.BenchError(f"{mlflow} is missing (run: make venv)")
        port = bench.free_port()
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        for name in ("MLFLOW_TRACKING_URI", "HOKUSAI_AUTH_SERVICE_TOKEN"):
            env.pop(name, None)
        proc = self.b.procs.start("mlflow", [
            str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
            "--artifacts-destination", str(tmp / "artifacts"),
        ], self.b.s.work_dir / "mlflow.log", env, self.b.load_cpus)
        # 7-15 s on an idle machine; a busy one takes longer.
        bench.wait_until("MLflow", proc, lambda: bench.http_request(port, "GET", "/health")[0] == 200, 120)
        return proc, port

    def start_envoys(self, mlflow_port: int) -> dict:
        """Two Envoys on the production listener, both in front of MLflow: bare, and with
        the filter. Each on its own ports; the filter calls the bench's dev auth service."""
        import bench
        envoys = {}
        for route, auth in (("bare", None), ("filter", "wasm")):
            ports = {"echo": mlflow_port, "auth": self.b.ports["auth"], "envoy": bench.free_port(),
                     "admin": bench.free_port()}
            configs = bench.ConfigFactory(ports, self.b.s.noop_wasm)
            config = configs.server(Scenario(f"mlflow_{route}", "", "plain", auth, 1, None))
            proc = self.b.start_envoy(f"Envoy [MLflow, {route}]", config, ports["admin"], f"mlflow-{route}",
                                      self.b.envoy_cpus)
            envoys[route] = (proc, ports["envoy"])
        return envoys

    # -- requests

    def request(self, conn: http.client.HTTPConnection, call: Call) -> None:
        import bench
        self.step += 1
        path = call.path.format(run_id=self.run_id)
        body = None
        headers = dict(HEADERS)
        if call.body is not None:
            body = call.body.format(run_id=self.run_id, step=self.step,
                                    timestamp=int(time.time() * 1000)).encode()
            headers["Content-Type"] = "application/json"
        conn.request(call.method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise bench.BenchError(f"MLflow {call.method} {path} answered {resp.status}: {data[:300]!r}")

    def setup_run(self, port: int) -> None:
        """An experiment with one run holding a few params and metrics, for runs/get."""
        import bench

        def post(path: str, payload: dict) -> dict:
            status, body = bench.http_request(port, "POST", path, {"Content-Type": "application/json"},
                                              json.dumps(payload).encode())
            if status != 200:
                raise bench.BenchError(f"MLflow setup {path} answered {status}: {body[:300]!r}")
            return json.loads(body)

        exp = post("/api/2.0/mlflow/experiments/create", {"name": f"bench-{os.getpid()}-{time.time_ns()}"})
        run = post("/api/2.0/mlflow/runs/create", {"experiment_id": exp["experiment_id"], "run_name": "bench"})
        self.run_id = run["run"]["info"]["run_id"]
        now = int(time.time() * 1000)
        post("/api/2.0/mlflow/runs/log-batch", {
            "run_id": self.run_id,
            "params": [{"key": f"param_{i}", "value": str(i)} for i in range(10)],
            "metrics": [{"key": f"metric_{i}", "value": i / 10, "timestamp": now, "step": 0} for i in range(10)],
            "tags": [{"key": "team", "value": "bench"}],
        })

    def batch(self, conn, call: Call, n: int, mlflow_pgid: int, envoy_pid: int | None) -> dict:
        for _ in range(WARMUP_PER_BATCH):
            self.request(conn, call)
        mlflow0 = group_cpu_ns(mlflow_pgid)
        envoy0 = task_cpu_ns(envoy_pid) if envoy_pid else 0
        wall0 = time.perf_counter_ns()
        latencies = []
        for _ in range(n):
            t = time.perf_counter_ns()
            self.request(conn, call)
            latencies.append((time.perf_counter_ns() - t) / 1000)
        wall = (time.perf_counter_ns() - wall0) / 1000
        return {
            "latency_us": latencies,
            "wall_us_per_request": wall / n,
            "mlflow_cpu_us_per_request": (group_cpu_ns(mlflow_pgid) - mlflow0) / 1000 / n,
            "envoy_cpu_us_per_request": (task_cpu_ns(envoy_pid) - envoy0) / 1000 / n if envoy_pid else None,
        }

    def run(self) -> dict:
        import bench
        with tempfile.TemporaryDirectory(prefix="bench-mlflow-") as tmp:
            mlflow = envoys = None
            try:
                started = time.monotonic()
                mlflow, port = self.start_mlflow(Path(tmp))
                startup_s = time.monotonic() - started
                envoys = self.start_envoys(port)
                self.setup_run(port)
                targets = {"direct": (None, port), **{r: (p.pid, ep) for r, (p, ep) in envoys.items()}}
                conns = {r: http.client.HTTPConnection("127.0.0.1", p, timeout=10) for r, (_, p) in targets.items()}
                # The first request through the filter validates the key; every later one is warm.
                for call in CALLS:
                    for route in ROUTES:
                        self.request(conns[route], call)
                self.b.auth_reset()
                idle0 = {r: task_cpu_ns(p.pid) for r, (p, _) in envoys.items()}
                time.sleep(IDLE_S)
                idle = {r: (task_cpu_ns(p.pid) - idle0[r]) / 1000 / IDLE_S for r, (p, _) in envoys.items()}
                batches = []
                for rnd in range(1, self.rounds + 1):
                    # Rotate the routes each round, so none is always first after a pause.
                    order = ROUTES[(rnd - 1) % 3:] + ROUTES[:(rnd - 1) % 3]
                    for call in CALLS:
                        for route in order:
                            r = self.batch(conns[route], call, self.per_batch, mlflow.pid, targets[route][0])
                            batches.append({"round": rnd, "call": call.name, "route": route, **r})
                auth = self.b.auth_stats()
                for conn in conns.values():
                    conn.close()
                for route, (proc, _) in envoys.items():
                    if not proc.alive():
                        raise bench.BenchError(f"the {route} Envoy died during the MLflow run:\n{proc.log_tail()}")
            finally:
                for proc, _ in (envoys or {}).values():
                    self.b.procs.stop(proc)
                if mlflow:
                    self.b.procs.stop(mlflow)
        return {
            "mlflow_version": bench.run_capture([str(bench.ROOT / ".venv" / "bin" / "python"), "-c",
                                                 "import mlflow; print(mlflow.__version__)"]),
            "startup_s": startup_s,
            "rounds": self.rounds,
            "per_batch": self.per_batch,
            "calls": [{"name": c.name, "method": c.method, "path": c.path.split("?")[0]} for c in CALLS],
            "auth_calls_while_measuring": auth.get("validate_calls", 0) + auth.get("ext_authz_calls", 0),
            "idle_envoy_cpu_us_per_s": idle,
            "batches": batches,
        }


def summarize(raw: dict) -> list[dict]:
    """Per call: MLflow's own time (direct), and what each Envoy route adds, as medians and
    ranges over the rounds (latency: the median over all of a route's requests)."""
    out = []
    for call in raw["calls"]:
        bs = [b for b in raw["batches"] if b["call"] == call["name"]]

        def of(route: str, key: str) -> list[float]:
            return [b[key] for b in bs if b["route"] == route]

        def lat(route: str) -> float:
            return statistics.median(x for b in bs if b["route"] == route for x in b["latency_us"])

        rounds = sorted({b["round"] for b in bs})
        by = {(b["round"], b["route"]): b for b in bs}
        added_cpu = [by[(r, "filter")]["envoy_cpu_us_per_request"] - by[(r, "bare")]["envoy_cpu_us_per_request"]
                     for r in rounds if (r, "filter") in by and (r, "bare") in by]
        out.append({
            "call": call["name"], "method": call["method"], "path": call["path"],
            "mlflow_latency_us": lat("direct"),
            "mlflow_cpu_us": median_range(of("direct", "mlflow_cpu_us_per_request")),
            "bare_latency_us": lat("bare"),
            "filter_latency_us": lat("filter"),
            "bare_envoy_cpu_us": median_range(of("bare", "envoy_cpu_us_per_request")),
            "filter_envoy_cpu_us": median_range(of("filter", "envoy_cpu_us_per_request")),
            "filter_added_cpu_us": median_range(added_cpu),
        })
    return out


def table(rows: list[dict]) -> list[str]:
    """The Markdown table, shared by results.md and `make bench-mlflow`'s output."""
    lines = ["| call | MLflow answers in (direct, p50) | MLflow CPU / call | Envoy CPU / call, bare | "
             "… with the filter | the filter adds (Envoy CPU) | range over rounds | of MLflow's CPU | "
             "p50 through bare Envoy | p50 through the filter |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        added = r["filter_added_cpu_us"]
        lines.append(
            f"| {r['method']} {r['call']} | {r['mlflow_latency_us'] / 1000:.2f} ms "
            f"| {r['mlflow_cpu_us']['median'] / 1000:.2f} ms | {r['bare_envoy_cpu_us']['median']:.0f} µs "
            f"| {r['filter_envoy_cpu_us']['median']:.0f} µs | **{added['median']:+.0f} µs** "
            f"| {added['min']:+.0f} to {added['max']:+.0f} "
            f"| {100 * added['median'] / r['mlflow_cpu_us']['median']:.1f}% | {r['bare_latency_us'] / 1000:.2f} ms "
            f"| {r['filter_latency_us'] / 1000:.2f} ms |")
    return lines


def sentence(rows: list[dict]) -> str:
    """The operator's one line: the filter's CPU next to MLflow's own time."""
    parts = [f"{r['filter_added_cpu_us']['median']:+.0f} µs of Envoy CPU to {r['call']}, which MLflow answers in "
             f"{r['mlflow_latency_us'] / 1000:.1f} ms ({r['mlflow_cpu_us']['median'] / 1000:.1f} ms of its own CPU)"
             for r in rows]
    return "The filter adds " + "; ".join(parts) + "."


def idle_sentence(raw: dict) -> str:
    idle = raw.get("idle_envoy_cpu_us_per_s")
    if not idle:
        return ""
    extra = idle["filter"] - idle["bare"]
    # At the pace of these calls, the share of each call's added CPU that is really per second.
    pace_us = statistics.median(b["wall_us_per_request"] for b in raw["batches"] if b["route"] == "filter")
    return (f"With no requests at all, over {IDLE_S} s, Envoy spent {idle['bare']:.0f} µs of CPU per second bare and "
            f"{idle['filter']:.0f} µs with the filter (its tick flushes metrics and gives up overdue callouts): "
            f"{extra:+.0f} µs per second per worker, whatever the traffic; at this pace (a call every "
            f"{pace_us / 1000:.1f} ms) about {extra * pace_us / 1e6:+.0f} µs of each call's added CPU.")
