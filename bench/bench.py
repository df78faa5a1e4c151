#!/usr/bin/env python3
"""Side-by-side benchmark: bare Envoy vs the hokusai auth filter vs Envoy's ext_authz.

Run it through make (it needs the .wasm, the venv, certs/ and the devstack binaries):

    make bench          # ~7 min: 3 interleaved repetitions; writes bench/results.{md,png}, bench/raw/
    make bench-smoke    # ~1 min: a few seconds per scenario; fails loudly if one misbehaves

Every scenario is one Envoy 1.40 (`--concurrency 1`) on loopback in front of the same
echo-upstream, driven by wrk with the same Lua script (bench/wrk/bench.lua). Envoy configs
are derived from envoy/envoy.yaml: same connection manager and routes, minus the access log,
with only the HTTP filter under test changed. See bench/README.md for the scenarios.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import functools
import hashlib
import http.client
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import yaml

if __name__ == "__main__":
    # mlflow_calls.py imports this module as `bench`: let it find this run's copy rather
    # than load a second one (whose BenchError this run's handlers would not catch).
    sys.modules.setdefault("bench", sys.modules[__name__])

import mlflow_calls
from report import replay_check, write_report
from scenarios import (FLOOD_AUTH_DELAY_MS, FLOOD_CONNECTIONS, FLOOD_KEY_FORMAT, FLOOD_KEYS,
                       FLOOD_LEGIT_CONNECTIONS, FLOOD_SCENARIOS, KEY_FORMAT, MIN_REPS_TO_JUDGE, NUM_KEYS,
                       PACED_CONNECTIONS, PACED_DELAY_MS, REQUEST_PATH, SCENARIOS, WARM_IDENTITY_HEADERS,
                       Scenario)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "wrk" / "bench.lua"
PROD_CONFIG = ROOT / "envoy" / "envoy.yaml"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "hokusai_auth_filter.wasm"
CERTS = ROOT / "certs"

SERVER_NAME = "mlflow.hokusai-development.local"

HCM_TYPE = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
JWT_AUTHN_TYPE = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
# The browser sign-in's filters, by name (csrf is wrapped in a matcher, so its type is not its own).
SIGN_IN_FILTERS = ("envoy.filters.http.csrf", "envoy.filters.http.oauth2")
WASM_TYPE = "envoy.extensions.filters.http.wasm.v3.Wasm"
ROUTER_TYPE = "envoy.extensions.filters.http.router.v3.Router"


class BenchError(Exception):
    """A failure with a message meant for the person running the bench."""


@dataclass
class Settings:
    smoke: bool
    reps: int
    duration_s: int
    warmup_s: int
    connections: int
    threads: int
    wrk_timeout_s: int
    paced_s: int
    paced_connections: int
    paced_delay_ms: int
    scenarios: list
    out_dir: Path
    work_dir: Path
    bin_dir: Path
    envoy: Path
    noop_wasm: Path
    pin: bool
    hostcall_wasm: Path | None = None  # bench/hostcall-cost, for A_replay
    mlflow: bool = False  # also measure MLflow's own time per call (mlflow_calls.py)
    mlflow_only: bool = False
    mlflow_rounds: int = 0
    mlflow_requests: int = 0
    flood_reps: int = 0  # the flood (run_floods); 0 = none


# --------------------------------------------------------------------------------------
# Processes: every child gets its own process group, dies with us (PDEATHSIG), and is
# stopped by group at exit, whatever the exit path.


def cpu_split(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """CPUs for the Envoy under test and for everything else (wrk, upstream, auth service,
    client-side Envoy). Pinned: Envoy gets the first CPU to itself, so with `--concurrency 1`
    its worker is what saturates; the rest share the other CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def _child_setup(cpus: set[int] | None) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed if bench.py dies
    except OSError:
        pass
    if cpus:
        os.sched_setaffinity(0, cpus)


class Proc:
    def __init__(self, name: str, argv: list[str], log: Path, env: dict | None = None,
                 cpus: set[int] | None = None):
        self.name = name
        self.log = log
        self.argv = argv
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=functools.partial(_child_setup, cpus),
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cpu_seconds(self) -> float:
        """utime + stime of all threads, from /proc."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kib(self) -> dict:
        out = {}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
        except OSError:
            pass
        return out

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout=3)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=5)


class Procs:
    def __init__(self) -> None:
        self.live: list[Proc] = []

    def start(self, name: str, argv: list[str], log: Path, env: dict | None = None,
              cpus: set[int] | None = None) -> Proc:
        proc = Proc(name, argv, log, env, cpus)
        self.live.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self.live):
            proc.stop()
        self.live.clear()


# --------------------------------------------------------------------------------------
# Small helpers


# Ports for the servers we start come from below Linux's ephemeral range (32768 and up):
# a port from bind(:0) is an ephemeral one, which wrk's and Envoy's outgoing connections
# can take before the server binds it. A block per process id keeps parallel runs apart.
_PORT_FIRST, _PORT_SPAN = 20_000, 12_000
_port_next = itertools.count(os.getpid() % (_PORT_SPAN // 200) * 200)


def free_port() -> int:
    for _ in range(_PORT_SPAN):
        port = _PORT_FIRST + next(_port_next) % _PORT_SPAN
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-31999")


def http_request(port: int, method: str, path: str, headers: dict | None = None,
                 body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_until(what: str, proc: Proc, probe, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{what} exited during startup (log {proc.log}):\n{proc.log_tail()}")
        try:
            if probe():
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    raise BenchError(f"{what} not ready after {timeout_s:.0f}s (log {proc.log}):\n{proc.log_tail()}")


def key(i: int) -> str:
    return KEY_FORMAT % i


def write_keys_file(path: Path) -> None:
    """The dev auth service's key file format (devstack/README.md): SHA-256 hashes only."""
    keys = [{
        "key_sha256": hashlib.sha256(key(i).encode()).hexdigest(),
        "key_id": f"key-bench-{i:04d}",
        "user_id": f"bench-user-{i:04d}",
        "service_id": "ml-platform",
        "scopes": ["mlflow:read", "mlflow:write"],
        "rate_limit_per_hour": None,
        "expires_at": None,
    } for i in range(NUM_KEYS)]
    path.write_text(json.dumps({"note": "generated by bench/bench.py", "keys": keys}))


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_stat() -> dict[int, list[int]]:
    """Per CPU, /proc/stat's jiffies: user nice system idle iowait irq softirq steal."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            out[int(name[3:])] = [int(v) for v in values[:8]]
    return out


def other_work(before: dict, after: dict, wall_s: float, envoy_cpus: set[int], envoy_cpu_s: float,
               ours_elsewhere_s: float) -> dict:
    """How much else the machine did during a run, in CPUs (1.0 = one CPU busy all along):
    on the Envoy's CPU(s), their process time (user, nice, system) minus Envoy's own; on the
    other CPUs, theirs minus this bench's other processes (wrk, upstream, auth service,
    client-side Envoy). Interrupt time (mostly loopback networking, ours too) and steal (a
    hypervisor's other guests) are kept apart. Cheap and approximate: clock ticks, and
    bench.py itself counts as other work."""
    tick = os.sysconf("SC_CLK_TCK")

    def part(cpus: set[int], ours_s: float) -> dict | None:
        if not cpus:
            return None
        d = [sum(after[c][i] - before[c][i] for c in cpus) / tick for i in range(8)]
        return {"cpus": len(cpus),
                "others": max(0.0, d[0] + d[1] + d[2] - ours_s) / wall_s,
                "irq": (d[5] + d[6]) / wall_s,
                "steal": d[7] / wall_s,
                "idle": (d[3] + d[4]) / wall_s}

    rest = set(before) - envoy_cpus
    return {"envoy_cpus": part(envoy_cpus, envoy_cpu_s), "other_cpus": part(rest, ours_elsewhere_s)}


def run_capture(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return "unavailable"


# --------------------------------------------------------------------------------------
# Envoy configs, derived from envoy/envoy.yaml


class ConfigFactory:
    def __init__(self, ports: dict, noop_wasm: Path, hostcall_wasm: Path | None = None) -> None:
        self.ports = ports
        self.noop_wasm = noop_wasm
        self.hostcall_wasm = hostcall_wasm
        try:
            self.prod = yaml.safe_load(PROD_CONFIG.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise BenchError(f"cannot read {PROD_CONFIG}: {e}") from e
        listeners = self.prod["static_resources"]["listeners"]
        tls = [l for l in listeners if "transport_socket" in l["filter_chains"][0]]
        plain = [l for l in listeners if "transport_socket" not in l["filter_chains"][0]]
        if len(tls) != 1 or len(plain) != 1:
            raise BenchError(f"{PROD_CONFIG}: expected one plain and one TLS listener")
        self.listeners = {"plain": plain[0], "tls": tls[0]}
        hcm = self._hcm(plain[0])
        wasm = [f for f in hcm["typed_config"]["http_filters"]
                if f.get("typed_config", {}).get("@type", "").endswith(WASM_TYPE)]
        if len(wasm) != 1:
            raise BenchError(f"{PROD_CONFIG}: expected exactly one wasm HTTP filter")
        self.wasm_filter = wasm[0]
        self.filter_config = json.loads(self._wasm_conf(wasm[0])["value"])

    @staticmethod
    def _hcm(listener: dict) -> dict:
        for f in listener["filter_chains"][0]["filters"]:
            if f.get("typed_config", {}).get("@type", "").endswith(HCM_TYPE):
                return f
        raise BenchError(f"{PROD_CONFIG}: listener {listener.get('name')} has no HTTP connection manager")

    @staticmethod
    def _wasm_conf(wasm_filter: dict) -> dict:
        return wasm_filter["typed_config"]["config"]["configuration"]

    def _wasm(self, no_cache: bool) -> dict:
        conf = deepcopy(self.filter_config)
        conf["auth_authority"] = f"127.0.0.1:{self.ports['auth']}"
        if no_cache:
            # Every request a miss: nothing fresh is ever served from the cache. Everything
            # else (the write of a stale-if-error entry included) is what a miss costs in production.
            conf["cache"]["ttl_s"] = 0
            conf["cache"]["negative_ttl_s"] = 0
        filt = deepcopy(self.wasm_filter)
        self._wasm_conf(filt)["value"] = json.dumps(conf)
        return filt

    def _noop_wasm(self) -> dict:
        """The production wasm filter entry with the no-op module in it: same VM settings."""
        filt = deepcopy(self.wasm_filter)
        config = filt["typed_config"]["config"]
        config["name"] = config["vm_config"]["vm_id"] = "bench_noop"
        config["vm_config"]["code"]["local"]["filename"] = str(self.noop_wasm)
        config.pop("configuration", None)
        return filt

    def _replay_wasm(self, name: str = "replay_warm", plan: str = "replay_warm 1") -> dict:
        """bench/hostcall-cost replaying one path's host calls once per request (the warm
        path's by default; `replay_miss` for D_replay), in the production wasm filter entry
        (same VM settings, as for the no-op filter)."""
        if self.hostcall_wasm is None:
            raise BenchError("A_replay and D_replay need bench/hostcall-cost's .wasm (--hostcall-wasm)")
        filt = deepcopy(self.wasm_filter)
        config = filt["typed_config"]["config"]
        config["name"] = config["root_id"] = config["vm_config"]["vm_id"] = f"bench_{name}"
        config["vm_config"]["code"]["local"]["filename"] = str(self.hostcall_wasm)
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                   "value": plan}
        return filt

    @staticmethod
    def _add_identity_by_route(hcm: dict) -> None:
        """Every forwarding route adds the warm request's identity headers itself, as the
        filter would write them (overwriting a client's copy, as the filter does): what
        carrying them upstream costs Envoy when no filter computes them."""
        for vhost in hcm["route_config"]["virtual_hosts"]:
            for route in vhost["routes"]:
                if "route" in route:
                    route["request_headers_to_add"] = [
                        {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
                        for k, v in WARM_IDENTITY_HEADERS]

    def _ext_authz(self) -> dict:
        return {
            "name": "envoy.filters.http.ext_authz",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                "transport_api_version": "V3",
                "failure_mode_allow": False,
                "allowed_headers": {"patterns": [{"exact": "authorization"}, {"exact": "x-api-key"}]},
                "http_service": {
                    "server_uri": {"uri": f"http://127.0.0.1:{self.ports['auth']}",
                                   "cluster": "auth_service", "timeout": "2s"},
                    "path_prefix": "/ext_authz",
                    "authorization_response": {"allowed_upstream_headers": {"patterns": [
                        {"exact": h} for h in ("x-user-id", "x-api-key-id", "x-auth-scopes")]}},
                },
            },
        }

    def server(self, scn: Scenario) -> dict:
        cfg = deepcopy(self.prod)
        cfg["admin"]["address"]["socket_address"]["port_value"] = self.ports["admin"]
        listener = deepcopy(self.listeners[scn.listener])
        listener["address"]["socket_address"]["port_value"] = self.ports["envoy"]
        hcm = self._hcm(listener)["typed_config"]
        # No access log: it would add the same per-request cost to every scenario and
        # hide the filter's share. Everything else is the production connection manager.
        hcm.pop("access_log", None)
        # Only the filter under test changes: the wasm filter is taken out and put back per
        # scenario; jwt_authn (user tokens) and the browser sign-in (csrf, oauth2) are taken
        # out everywhere, since no scenario sends a JWT or a cookie, the API routes the bench
        # calls disable the sign-in anyway, and bare Envoy means no authentication at all.
        filters = [f for f in hcm["http_filters"]
                   if not f.get("typed_config", {}).get("@type", "").endswith((WASM_TYPE, JWT_AUTHN_TYPE))
                   and f.get("name") not in SIGN_IN_FILTERS]
        if not filters or not filters[-1].get("typed_config", {}).get("@type", "").endswith(ROUTER_TYPE):
            raise BenchError(f"{PROD_CONFIG}: expected the router as the last HTTP filter")
        if scn.auth in ("wasm", "wasm-nocache"):
            filters.insert(len(filters) - 1, self._wasm(no_cache=scn.auth == "wasm-nocache"))
        elif scn.auth == "noop-wasm":
            filters.insert(len(filters) - 1, self._noop_wasm())
        elif scn.auth == "replay-wasm":
            filters.insert(len(filters) - 1, self._replay_wasm())
        elif scn.auth and scn.auth.startswith("replay-miss-wasm"):
            parts = scn.auth.partition(":")[2]
            filters.insert(len(filters) - 1, self._replay_wasm(
                "replay_miss", f"replay_miss 1 127.0.0.1:{self.ports['auth']} {parts}".rstrip()))
        elif scn.auth == "route-headers":
            self._add_identity_by_route(hcm)
        elif scn.auth == "ext_authz":
            filters.insert(len(filters) - 1, self._ext_authz())
        hcm["http_filters"] = filters
        cfg["static_resources"]["listeners"] = [listener]
        for cluster in cfg["static_resources"]["clusters"]:
            port = {"auth_service": self.ports["auth"], "mlflow": self.ports["echo"]}.get(cluster["name"])
            if port is None:
                continue
            for group in cluster["load_assignment"]["endpoints"]:
                for ep in group["lb_endpoints"]:
                    ep["endpoint"]["address"]["socket_address"]["port_value"] = port
        return absolute_paths(cfg)

    def client(self) -> dict:
        """A client-side Envoy: plain HTTP in, mTLS with certs/client.crt out to the server."""
        return absolute_paths({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": self.ports["client_admin"]}}},
            "static_resources": {
                "listeners": [{
                    "name": "client",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.ports["client"]}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/" + HCM_TYPE,
                            "stat_prefix": "client",
                            "route_config": {"virtual_hosts": [{
                                "name": "all", "domains": ["*"],
                                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "server"}}],
                            }]},
                            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/" + ROUTER_TYPE}}],
                        },
                    }]}],
                }],
                "clusters": [{
                    "name": "server",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "load_assignment": {"cluster_name": "server", "endpoints": [{"lb_endpoints": [{
                        "endpoint": {"address": {"socket_address": {
                            "address": "127.0.0.1", "port_value": self.ports["envoy"]}}}}]}]},
                    "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "sni": SERVER_NAME,
                        "common_tls_context": {
                            "tls_certificates": [{"certificate_chain": {"filename": "certs/client.crt"},
                                                  "private_key": {"filename": "certs/client.key"}}],
                            "validation_context": {"trusted_ca": {"filename": "certs/ca.crt"},
                                                   "match_typed_subject_alt_names": [{
                                                       "san_type": "DNS",
                                                       "matcher": {"exact": SERVER_NAME}}]},
                        },
                    }},
                }],
            },
        })


def absolute_paths(node):
    """Make every `filename:` absolute, so the config does not depend on the cwd."""
    if isinstance(node, dict):
        return {k: (str(ROOT / v) if k == "filename" and isinstance(v, str) and not v.startswith("/")
                    else absolute_paths(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [absolute_paths(v) for v in node]
    return node


# --------------------------------------------------------------------------------------
# The bench


class Bench:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.procs = Procs()
        self.ports = {name: free_port() for name in
                      ("echo", "auth", "envoy", "admin", "client", "client_admin")}
        self.configs = ConfigFactory(self.ports, settings.noop_wasm, settings.hostcall_wasm)
        self.envoy_cpus, self.load_cpus = cpu_split(settings.pin)
        self.auth: Proc | None = None
        self.echo: Proc | None = None

    # -- fixtures shared by all scenarios

    def with_port_retry(self, port_names: tuple[str, ...], start):
        """Ports are picked free but bound later by the child: if another process took one in
        between, pick new ones and start again."""
        for attempt in range(3):
            try:
                return start()
            except BenchError as e:
                if attempt == 2 or "in use" not in str(e):
                    raise
                for name in port_names:
                    self.ports[name] = free_port()
                print(f"  (a port was taken meanwhile; retrying with {', '.join(port_names)} on new ports)")

    def start_backends(self) -> None:
        self.with_port_retry(("echo", "auth"), self._start_backends)

    def _start_backends(self) -> None:
        self.procs.stop_all()
        work = self.s.work_dir
        keys_file = work / "bench-keys.json"
        write_keys_file(keys_file)
        env = dict(os.environ)
        env.pop("HOKUSAI_AUTH_SERVICE_TOKEN", None)
        self.echo = self.procs.start("echo-upstream", [
            str(self.s.bin_dir / "echo-upstream"), "--listen", f"127.0.0.1:{self.ports['echo']}",
        ], work / "echo-upstream.log", env, self.load_cpus)
        self.auth = self.procs.start("dev-auth-service", [
            str(self.s.bin_dir / "dev-auth-service"), "--listen", f"127.0.0.1:{self.ports['auth']}",
            "--keys", str(keys_file), "--control", "--quiet",
        ], work / "dev-auth-service.log", env, self.load_cpus)
        wait_until("echo-upstream", self.echo,
                   lambda: http_request(self.ports["echo"], "GET", "/ready")[0] == 200)
        wait_until("dev-auth-service", self.auth,
                   lambda: http_request(self.ports["auth"], "GET", "/health")[0] == 200)

    def auth_stats(self) -> dict:
        status, body = http_request(self.ports["auth"], "GET", "/__dev/stats")
        if status != 200:
            raise BenchError(f"dev-auth-service /__dev/stats answered {status}: {body[:200]!r}")
        return json.loads(body)

    def auth_reset(self) -> None:
        status, body = http_request(self.ports["auth"], "POST", "/__dev/reset")
        if status not in (200, 204):
            raise BenchError(f"dev-auth-service /__dev/reset answered {status}: {body[:200]!r}")

    # -- one scenario run

    def start_envoy(self, name: str, config: dict, admin_port: int, tag: str, cpus: set[int] | None,
                    concurrency: int = 1) -> Proc:
        cfg_path = self.s.work_dir / f"envoy-{tag}.json"
        cfg_path.write_text(json.dumps(config, indent=1))
        env = dict(os.environ)
        env.pop("HOKUSAI_AUTH_SERVICE_TOKEN", None)
        proc = self.procs.start(name, [
            str(self.s.envoy), "-c", str(cfg_path), "--concurrency", str(concurrency),
            "--disable-hot-restart", "--log-level", "warn",
        ], self.s.work_dir / f"envoy-{tag}.log", env, cpus)
        try:
            wait_until(f"{name} ({cfg_path})", proc,
                       lambda: http_request(admin_port, "GET", "/ready")[0] == 200)
        except BaseException:
            self.procs.stop(proc)
            raise
        return proc

    def check_request(self, scn: Scenario, port: int, envoy: Proc) -> dict:
        """One request outside wrk: 200, and the upstream saw what the scenario claims."""
        headers = {"Authorization": f"Bearer {key(0)}"} if scn.keys else {}
        status, body = http_request(port, "GET", REQUEST_PATH, headers)
        problem = None
        seen: dict = {}
        if status != 200:
            problem = f"expected 200, got {status}: {body[:300]!r}"
        else:
            try:
                seen = {k: v for k, v in json.loads(body)["headers"]}
            except (ValueError, KeyError, TypeError):
                problem = f"upstream reply is not echo-upstream's JSON: {body[:300]!r}"
        if problem is None:
            wrong = {k: seen.get(k) for k, v in WARM_IDENTITY_HEADERS if seen.get(k) != v}
            if seen.get("x-auth-path") != scn.expect_auth_path:
                problem = (f"upstream saw x-auth-path={seen.get('x-auth-path')!r}, "
                           f"expected {scn.expect_auth_path!r}")
            elif scn.expect_identity and wrong:
                # The floors must carry what B carries, or they are not B's floors.
                problem = (f"upstream saw identity headers {wrong}, expected "
                           f"{ {k: v for k, v in WARM_IDENTITY_HEADERS if k in wrong} }")
            elif scn.auth == "ext_authz" and seen.get("x-user-id") != "bench-user-0000":
                problem = f"upstream saw x-user-id={seen.get('x-user-id')!r} from ext_authz, expected 'bench-user-0000'"
        if problem:
            raise BenchError(f"scenario {scn.name}: check request failed: {problem}\n"
                             f"Envoy log {envoy.log}:\n{envoy.log_tail()}")
        return {"status": status, "x-auth-path": seen.get("x-auth-path"), "x-user-id": seen.get("x-user-id")}

    def wrk(self, scn: Scenario, port: int, duration_s: int, out: Path,
            connections: int | None = None, delay_ms: int = 0,
            keys: tuple[int, str] | None = None) -> dict:
        """wrk against `port`; `keys` (count, format) instead of the scenario's bench keys."""
        count, key_format = keys or (scn.keys, KEY_FORMAT)
        env = dict(os.environ, BENCH_KEYS=str(count), BENCH_KEY_FORMAT=key_format, BENCH_OUT=str(out),
                   BENCH_DELAY_MS=str(delay_ms))
        out.unlink(missing_ok=True)
        argv = ["wrk", "-t", str(self.s.threads), "-c", str(connections or self.s.connections),
                "-d", f"{duration_s}s", "--timeout", f"{self.s.wrk_timeout_s}s",
                "-s", str(LUA), f"http://127.0.0.1:{port}{REQUEST_PATH}"]
        log = out.with_suffix(".log")
        with open(log, "wb") as logf:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT,
                                    preexec_fn=functools.partial(_child_setup, self.load_cpus))
        deadline = time.monotonic() + duration_s + self.s.wrk_timeout_s + 30
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise BenchError(f"scenario {scn.name}: wrk did not finish in time (log {log})")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0 or not out.exists():
            raise BenchError(f"scenario {scn.name}: wrk failed (exit {proc.returncode}):\n"
                             f"{' '.join(argv)}\n{log.read_text(errors='replace')[-2000:]}")
        result = json.loads(out.read_text())
        result["wrk_cpu_s"] = rusage.ru_utime + rusage.ru_stime
        result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
        return result

    def start_envoys(self, scn: Scenario, tag: str) -> tuple[Proc, Proc | None, int]:
        """The Envoy under test, plus for the TLS scenarios the client-side Envoy that
        originates mTLS with certs/client.crt. Returns them and the port wrk talks to."""
        # Two workers need two CPUs: such a scenario's Envoy is not confined to the first.
        cpus = self.envoy_cpus if scn.concurrency == 1 else None
        envoy = self.start_envoy(f"Envoy [{scn.name}]", self.configs.server(scn), self.ports["admin"], tag,
                                 cpus, scn.concurrency)
        if scn.listener != "tls":
            return envoy, None, self.ports["envoy"]
        try:
            client = self.start_envoy(f"client-side Envoy [{scn.name}]", self.configs.client(),
                                      self.ports["client_admin"], tag + "-client", self.load_cpus)
        except BaseException:
            self.procs.stop(envoy)
            raise
        return envoy, client, self.ports["client"]

    def run_scenario(self, scn: Scenario, rep: int) -> dict:
        tag = f"r{rep}-{scn.name}"
        envoy, client, port = self.with_port_retry(("envoy", "admin", "client", "client_admin"),
                                                   lambda: self.start_envoys(scn, tag))
        try:
            check = self.check_request(scn, port, envoy)
            warm = self.wrk(scn, port, self.s.warmup_s, self.s.work_dir / f"wrk-{tag}-warmup.json")
            self.auth_reset()
            watched = {"envoy": envoy, "auth": self.auth, "echo": self.echo}
            if client:
                watched["client_envoy"] = client
            load = loadavg()
            stat0 = cpu_stat()
            cpu0 = {k: p.cpu_seconds() for k, p in watched.items()}
            main = self.wrk(scn, port, self.s.duration_s, self.s.work_dir / f"wrk-{tag}.json")
            cpu1 = {k: p.cpu_seconds() for k, p in watched.items()}
            stat1 = cpu_stat()
            stats = self.auth_stats()
            memory = envoy.memory_kib()
            paced = self.wrk(scn, port, self.s.paced_s, self.s.work_dir / f"wrk-{tag}-paced.json",
                             self.s.paced_connections, self.s.paced_delay_ms)
            if not envoy.alive():
                raise BenchError(f"scenario {scn.name}: Envoy died during the run:\n{envoy.log_tail()}")
        finally:
            if client:
                self.procs.stop(client)
            self.procs.stop(envoy)
        requests = max(main["requests"], 1)
        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        cpu["wrk"] = main["wrk_cpu_s"]
        auth_calls = stats.get("validate_calls", 0) + stats.get("ext_authz_calls", 0)
        # Pinned, Envoy has its CPU(s) to itself: whatever else ran there is other work. A
        # two-worker Envoy is not pinned, so only the whole machine can be told apart.
        pinned = scn.concurrency == 1 and self.envoy_cpus
        machine = other_work(stat0, stat1, main["duration_us"] / 1e6,
                             self.envoy_cpus if pinned else set(), cpu["envoy"] if pinned else 0.0,
                             sum(cpu.values()) - (cpu["envoy"] if pinned else 0.0))
        machine["loadavg_1m_at_start"] = load[0]
        return {
            "scenario": scn.name,
            "rep": rep,
            "check": check,
            "warmup": warm,
            "wrk": main,
            "paced": paced,
            "auth_stats": stats,
            "auth_calls_per_10k": auth_calls * 10_000 / requests,
            "cpu_s": cpu,
            "cpu_us_per_request": {k: v * 1e6 / requests for k, v in cpu.items()},
            "envoy_memory_kib": memory,
            "machine": machine,
        }

    def run_flood(self, scn: Scenario, rep: int) -> dict:
        """One key the auth service knows, cached, next to a flood of keys nobody issued, while
        the auth service takes FLOOD_AUTH_DELAY_MS per call: what the legitimate client still
        gets, and how many calls the flood keeps open against the auth service."""
        tag = f"r{rep}-{scn.name}"
        envoy, _, port = self.with_port_retry(("envoy", "admin", "client", "client_admin"),
                                              lambda: self.start_envoys(scn, tag))
        set_fault = lambda spec: http_request(  # noqa: E731
            self.ports["auth"], "POST", "/__dev/fault",
            {"content-type": "application/json"}, json.dumps(spec).encode())
        try:
            check = self.check_request(scn, port, envoy)
            status, body = set_fault({"fault": "slow", "delay_ms": FLOOD_AUTH_DELAY_MS})
            if status not in (200, 204):
                raise BenchError(f"dev-auth-service /__dev/fault answered {status}: {body[:200]!r}")
            self.auth_reset_counts_only()
            cpu0 = envoy.cpu_seconds()
            flood_out = self.s.work_dir / f"wrk-{tag}-flood.json"
            flood: dict = {}

            def run_flood_wrk() -> None:
                flood.update(self.wrk(scn, port, self.s.duration_s, flood_out, FLOOD_CONNECTIONS,
                                      keys=(FLOOD_KEYS, FLOOD_KEY_FORMAT)))

            thread = threading.Thread(target=run_flood_wrk)
            thread.start()
            legit = self.wrk(scn, port, self.s.duration_s, self.s.work_dir / f"wrk-{tag}-legit.json",
                             FLOOD_LEGIT_CONNECTIONS)
            thread.join()
            cpu1 = envoy.cpu_seconds()
            stats = self.auth_stats()
            if not envoy.alive():
                raise BenchError(f"flood {scn.name}: Envoy died during the run:\n{envoy.log_tail()}")
        finally:
            set_fault({"fault": "none"})
            self.procs.stop(envoy)
        answered = legit["requests"] + flood.get("requests", 0)
        return {
            "scenario": scn.name,
            "rep": rep,
            "check": check,
            "legit": legit,
            "flood": flood,
            "auth_stats": stats,
            "envoy_cpu_us_per_answer": (cpu1 - cpu0) * 1e6 / max(answered, 1),
        }

    def auth_reset_counts_only(self) -> None:
        """/__dev/reset clears the fault too; the flood sets it again right after."""
        status, body = http_request(self.ports["auth"], "GET", "/__dev/stats")
        fault = json.loads(body).get("fault") if status == 200 else None
        self.auth_reset()
        if fault:
            http_request(self.ports["auth"], "POST", "/__dev/fault",
                         {"content-type": "application/json"}, json.dumps(fault).encode())

    def run_floods(self) -> list[dict]:
        runs = []
        for rep in range(1, self.s.flood_reps + 1):
            for scn in FLOOD_SCENARIOS:
                print(f"[flood {rep}/{self.s.flood_reps}] {scn.name:6} {scn.title} ...", end="", flush=True)
                r = self.run_flood(scn, rep)
                lg, fl = r["legit"], r["flood"]
                print(f" legit {lg['rps']:7.0f} req/s (p99 {lg['latency_us']['p99'] / 1000:.1f} ms);"
                      f" flood {fl.get('rps', 0):7.0f} answers/s;"
                      f" auth calls at once ≤ {r['auth_stats'].get('max_in_flight')}", flush=True)
                runs.append(r)
        return runs

    def run(self) -> list[dict]:
        self.start_backends()
        runs = []
        scenarios = [scn for scn in SCENARIOS if scn.name in self.s.scenarios]
        n = len(scenarios)
        for rep in range(1, self.s.reps + 1):
            # Interleaved, and rotated each repetition so no scenario always runs first.
            offset = (rep - 1) % n
            order = scenarios[offset:] + scenarios[:offset]
            for scn in order:
                print(f"[rep {rep}/{self.s.reps}] {scn.name:6} {scn.title} ...", end="", flush=True)
                r = self.run_scenario(scn, rep)
                w = r["wrk"]
                errs = sum(w["errors"].values())
                p = r["paced"]["latency_us"]
                print(f" {w['rps']:7.0f} req/s  Envoy {r['cpu_us_per_request']['envoy']:6.1f} µs/req;"
                      f" p99 {w['latency_us']['p99'] / 1000:.2f} ms;"
                      f" paced p50/p99 {p['p50'] / 1000:.2f}/{p['p99'] / 1000:.2f} ms;"
                      f" errors {errs + sum(r['paced']['errors'].values())};"
                      f" auth calls/10k {r['auth_calls_per_10k']:.0f}", flush=True)
                runs.append(r)
        return runs


# --------------------------------------------------------------------------------------
# Machine description, for the report


def machine_info(settings: Settings) -> dict:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    commit = run_capture(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = run_capture(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": run_capture(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "envoy": run_capture([str(settings.envoy), "--version"]).replace("\n", " ").split("version:")[-1].strip(),
        "wrk": run_capture(["wrk", "-v"]).splitlines()[0].split(" Copyright")[0] if shutil.which("wrk") else "missing",
        "rustc": run_capture(["rustc", "--version"]),
        "python": platform.python_version(),
        "git_commit": commit + (" (with uncommitted changes)" if dirty and dirty != "unavailable" else ""),
        "wasm_bytes": WASM.stat().st_size if WASM.exists() else None,
    }


# --------------------------------------------------------------------------------------
# Smoke checks: each scenario ran, nothing but 2xx, and the auth calls the scenario implies.


def flood_check(floods: list[dict]) -> list[str]:
    """The flood's promises, in every run: the known key is never refused, and the filter
    never keeps more calls open against the auth service than its cap (256, one worker)."""
    problems = []
    for r in floods:
        name, legit = r["scenario"], r["legit"]
        if legit["requests"] == 0 or any(legit["errors"].values()):
            problems.append(f"flood {name}: the known key got {legit['requests']} answers, errors {legit['errors']}")
        most = r["auth_stats"].get("max_in_flight", 0)
        if name == "F" and most > 256:
            problems.append(f"flood {name}: {most} calls at once against the auth service, past the cap of 256")
    return problems


def smoke_check(runs: list[dict]) -> list[str]:
    problems = []
    for r in runs:
        name, w = r["scenario"], r["wrk"]
        for phase in ("warmup", "wrk", "paced"):
            p = r[phase]
            errs = {k: v for k, v in p["errors"].items() if v}
            if p["requests"] == 0:
                problems.append(f"{name}: wrk ({phase}) completed no requests")
            if errs:
                problems.append(f"{name}: wrk ({phase}) saw errors {errs} ('status' = HTTP status ≥ 400) "
                                f"out of {p['requests']} requests")
        calls = r["auth_stats"].get("validate_calls", 0) + r["auth_stats"].get("ext_authz_calls", 0)
        if (name in ("D", "E") or name.startswith("D_")) and calls < 0.95 * w["requests"]:
            problems.append(f"{name}: expected an auth call per request, got {calls} calls for "
                            f"{w['requests']} requests")
        if name in ("A", "A_hdrs", "A_wasm", "A_replay", "A_tls", "C") and calls:
            problems.append(f"{name}: expected no auth calls, got {calls}")
    return problems


# --------------------------------------------------------------------------------------


def seconds(value: str) -> int:
    """wrk takes whole seconds."""
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be a whole number of seconds ≥ 1")
    return n


def parse_args() -> Settings:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a few seconds per scenario; assert statuses only")
    p.add_argument("--reps", type=int, help="repetitions of the whole set (default 5; smoke 1)")
    p.add_argument("--duration", type=seconds, help="saturating run, seconds per scenario (default 8; smoke 2)")
    p.add_argument("--warmup", type=seconds, help="warm-up seconds per scenario run (default 2; smoke 1)")
    p.add_argument("--connections", type=int, help="wrk connections, saturating run (default 16; smoke 4)")
    p.add_argument("--paced", type=seconds, help="paced latency run, seconds per scenario (default 5; smoke 1)")
    p.add_argument("--scenarios", help="comma-separated subset, e.g. A,B (default: all: "
                   + ",".join(s.name for s in SCENARIOS) + ")")
    p.add_argument("--out", type=Path, help="where results.md, results.png and raw/ go (default bench/)")
    p.add_argument("--bin-dir", type=Path,
                   help="where dev-auth-service and echo-upstream are (default $CARGO_TARGET_DIR/release "
                        "or target/release)")
    p.add_argument("--envoy", type=Path, default=ROOT / ".venv" / "bin" / "envoy")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not pin the Envoy under test to its own CPU (default: pinned when ≥ 2 CPUs)")
    p.add_argument("--noop-wasm", type=Path,
                   help="the no-op filter for A_wasm, built by make from bench/noop-filter (default "
                        "$CARGO_TARGET_DIR or target, then /bench-noop/wasm32-wasip1/release/bench_noop_filter.wasm)")
    p.add_argument("--hostcall-wasm", type=Path,
                   help="bench/hostcall-cost for A_replay, built by make (default $CARGO_TARGET_DIR or target, "
                        "then /bench-hostcall/wasm32-wasip1/release/bench_hostcall_cost.wasm)")
    p.add_argument("--no-mlflow", dest="mlflow", action="store_false",
                   help="skip the MLflow measurement a full run makes after its scenarios (results.md, "
                        "\"In production terms\")")
    p.add_argument("--mlflow-only", action="store_true",
                   help="only measure MLflow's time per call and what the filter adds (make bench-mlflow); "
                        "prints a table, rewrites nothing in bench/")
    p.add_argument("--mlflow-rounds", type=int, help="rounds of the MLflow measurement (default 5)")
    p.add_argument("--mlflow-requests", type=int,
                   help="requests per call, route and round in the MLflow measurement (default 40)")
    p.add_argument("--flood-reps", type=int,
                   help="repetitions of the flood (a cached key next to a flood of unknown keys against a "
                        "slow auth service; filter and ext_authz); default 3 in a full run with all scenarios, "
                        "0 otherwise (smoke: 1)")
    a = p.parse_args()
    if a.smoke and a.mlflow_only:
        p.error("--smoke and --mlflow-only do not go together")
    known = [s.name for s in SCENARIOS]
    chosen = a.scenarios.split(",") if a.scenarios else [s.name for s in SCENARIOS if s.default]
    if unknown := [n for n in chosen if n not in known]:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
    target_dir = ROOT / os.environ.get("CARGO_TARGET_DIR", "target")  # an absolute value wins
    return Settings(
        smoke=a.smoke,
        reps=a.reps or (1 if a.smoke else 5),
        duration_s=a.duration or (2 if a.smoke else 8),
        warmup_s=a.warmup or (1 if a.smoke else 2),
        connections=a.connections or (4 if a.smoke else 16),
        threads=1,
        wrk_timeout_s=5 if a.smoke else 2,
        paced_s=a.paced or (1 if a.smoke else 5),
        paced_connections=PACED_CONNECTIONS,
        paced_delay_ms=PACED_DELAY_MS,
        scenarios=chosen,
        out_dir=(a.out or BENCH).resolve(),
        work_dir=ROOT / "bench" / "raw" / "tmp" / ("smoke" if a.smoke else "mlflow" if a.mlflow_only else "full"),
        bin_dir=(a.bin_dir or target_dir / "release").resolve(),
        envoy=a.envoy,
        noop_wasm=(a.noop_wasm or target_dir / "bench-noop" / "wasm32-wasip1" / "release"
                   / "bench_noop_filter.wasm").resolve(),
        hostcall_wasm=(a.hostcall_wasm or target_dir / "bench-hostcall" / "wasm32-wasip1" / "release"
                       / "bench_hostcall_cost.wasm").resolve(),
        pin=a.pin,
        mlflow=a.mlflow and not a.smoke,
        mlflow_only=a.mlflow_only,
        mlflow_rounds=a.mlflow_rounds or mlflow_calls.DEFAULT_ROUNDS,
        mlflow_requests=a.mlflow_requests or mlflow_calls.DEFAULT_PER_BATCH,
        flood_reps=(a.flood_reps if a.flood_reps is not None
                    else 1 if a.smoke else 3 if not a.scenarios else 0),
    )


def preflight(s: Settings) -> None:
    missing = []
    for path, hint in [
        (s.envoy, "make venv"),
        (WASM, "make build"),
        (s.noop_wasm, "cargo build --release --target wasm32-wasip1 --manifest-path bench/noop-filter/Cargo.toml "
                      "--target-dir target/bench-noop; make bench does it"),
        (s.hostcall_wasm or Path("--hostcall-wasm"), "cargo build --release --target wasm32-wasip1 --manifest-path "
                          "bench/hostcall-cost/Cargo.toml --target-dir target/bench-hostcall; make bench does it"),
        (CERTS / "client.crt", "make certs"),
        (s.bin_dir / "dev-auth-service", "cargo build --release -p hokusai-devstack"),
        (s.bin_dir / "echo-upstream", "cargo build --release -p hokusai-devstack"),
        (LUA, "it is part of the repo"),
        (PROD_CONFIG, "it is part of the repo"),
    ]:
        if not path.exists():
            missing.append(f"  {path} (run: {hint})")
    if not shutil.which("wrk"):
        missing.append("  wrk (install: apt-get install -y wrk)")
    if missing:
        raise BenchError("missing:\n" + "\n".join(missing))


def mlflow_only(s: Settings, label: str) -> int:
    """`make bench-mlflow`: MLflow's time per call and what the filter adds, printed."""
    bench = None
    try:
        preflight(s)
        if s.work_dir.exists():
            shutil.rmtree(s.work_dir)
        s.work_dir.mkdir(parents=True)
        print(f"{label}: MLflow, {len(mlflow_calls.CALLS)} calls × {len(mlflow_calls.ROUTES)} routes × "
              f"{s.mlflow_rounds} rounds × {s.mlflow_requests} requests; load average now "
              f"{' '.join(f'{x:.2f}' for x in loadavg())}; logs in {s.work_dir}", flush=True)
        bench = Bench(s)
        bench.start_backends()
        raw = mlflow_calls.MlflowCalls(bench, s.mlflow_rounds, s.mlflow_requests).run()
    except (BenchError, OSError, http.client.HTTPException, ValueError, KeyError) as e:
        print(f"\n{label}: FAILED: {e!r}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{label}: interrupted", file=sys.stderr)
        return 130
    finally:
        if bench:
            bench.procs.stop_all()
    raw["loadavg_at_end"] = loadavg()
    out = s.work_dir / "mlflow.json"
    out.write_text(json.dumps(raw, indent=1) + "\n")
    rows = mlflow_calls.summarize(raw)
    print("\n".join(["", *mlflow_calls.table(rows), "", mlflow_calls.sentence(rows),
                     mlflow_calls.idle_sentence(raw)]))
    print(f"\n{label}: MLflow {raw['mlflow_version']} healthy after {raw['startup_s']:.0f} s; auth-service calls "
          f"while measuring: {raw['auth_calls_while_measuring']} (0: the key stayed warm). Raw data: {out}")
    return 0


def print_verdicts(label: str, summary: dict, targets: list[dict], noise: dict) -> None:
    """The targets, and a line a reader cannot miss when some could not be judged."""
    print()
    for name, r in summary.items():
        if r["errors"]:
            print(f"  WARNING: {name}: {r['errors']} requests failed (status ≥ 400 or socket errors)")
    for t in targets:
        print(f"  {t['label'][:40]:40} {t['shown']:>10}  target {t['target']:10} "
              f"margin {t['margin_shown']:>10}  noise {t['noise_shown']:9} {t['verdict'].upper()}")
    if noise.get("baseline"):
        b = noise["baseline"]
        print(f"\n  Noise: bare Envoy (A) took {b['median']:.1f} µs of Envoy CPU per request, "
              f"{b['min']:.1f} to {b['max']:.1f} over {b['n']} repetitions ({b['spread_pct']:.1f}% spread).")
    unresolved = [t for t in targets if t["verdict"] == "not resolved"]
    if unresolved and all(t["too_few_reps"] for t in unresolved):
        print(f"\n  {label}: NOT RESOLVED: too few repetitions to measure this run's noise, so no target is "
              f"judged; `make bench` runs 5 (--reps ≥ {MIN_REPS_TO_JUDGE}).")
    elif unresolved:
        print(f"\n  {label}: {len(unresolved)} of {len(targets)} target(s) NOT RESOLVED: the distance to the "
              "threshold is inside this run's noise, so this run cannot say met or missed ("
              + ", ".join(t["label"].split(",")[0] for t in unresolved) + "). Rerun `make bench` on a quieter "
              "machine (nothing else running; bench/README.md, \"Noise\").")


def main() -> int:
    s = parse_args()
    label = "bench-smoke" if s.smoke else "bench-mlflow" if s.mlflow_only else "bench"

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if s.mlflow_only:
        return mlflow_only(s, label)
    bench = None
    try:
        preflight(s)
        if s.work_dir.exists():
            shutil.rmtree(s.work_dir)
        s.work_dir.mkdir(parents=True)
        machine = machine_info(s)
        # Per scenario run: Envoy's start and the check request take about 2 s; MLflow's start
        # and its measurement about a minute.
        est = len(s.scenarios) * s.reps * (s.warmup_s + s.duration_s + s.paced_s + 2) + (60 if s.mlflow else 0)
        print(f"{label}: {len(s.scenarios)} scenarios × {s.reps} repetition(s); each {s.warmup_s:g}s warm-up, "
              f"{s.duration_s:g}s saturating (wrk -c {s.connections}), {s.paced_s:g}s paced"
              f"{'; then MLflow' if s.mlflow else ''}; about {est / 60:.1f} min. "
              f"Load average now: {' '.join(machine['loadavg_at_start'])}; logs in {s.work_dir}")
        if "A_replay" in s.scenarios and not s.smoke:
            replay = replay_check(WASM)
            if replay["verdict"] != "same":
                print(f"  WARNING: {replay['text']}")
        bench = Bench(s)
        runs = bench.run()
        mlflow = None
        if s.mlflow:
            print(f"MLflow: typical calls, directly and through Envoy with and without the filter "
                  f"({s.mlflow_rounds} rounds) ...", flush=True)
            try:
                mlflow = mlflow_calls.MlflowCalls(bench, s.mlflow_rounds, s.mlflow_requests).run()
            except Exception as e:  # noqa: BLE001 - whatever it was, the scenarios' data must survive
                # The scenarios' numbers stand on their own; the report says what is missing.
                print(f"  WARNING: the MLflow measurement failed, results.md will lack it: {e!r}", file=sys.stderr)
                mlflow = {"error": f"{type(e).__name__}: {e}"}
        floods = bench.run_floods() if s.flood_reps else []
        machine["loadavg_at_end"] = [f"{x:.2f}" for x in loadavg()]
    except BenchError as e:
        print(f"\n{label}: FAILED: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{label}: interrupted", file=sys.stderr)
        return 130
    finally:
        if bench:
            bench.procs.stop_all()

    if s.smoke:
        (s.work_dir / "smoke.json").write_text(json.dumps(runs + floods, indent=1) + "\n")
        problems = smoke_check(runs) + flood_check(floods)
        if problems:
            print(f"{label}: FAILED:\n  " + "\n  ".join(problems) + f"\n(logs and raw wrk output in {s.work_dir})",
                  file=sys.stderr)
            return 1
        print(f"{label}: OK: all {len(runs)} scenario runs answered 200 with the expected auth path "
              f"(raw output in {s.work_dir})")
        return 0

    raw = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(s).items()},
        "request_path": REQUEST_PATH,
        "filter_cache": bench.configs.filter_config.get("cache", {}),
        "cpus": {"envoy": sorted(bench.envoy_cpus), "others": sorted(bench.load_cpus)} if bench.envoy_cpus else None,
        "machine": machine,
        "runs": runs,
        "replay_check": replay_check(WASM) if "A_replay" in s.scenarios else None,
    }
    if mlflow is not None:
        raw["mlflow"] = mlflow
    if floods:
        raw["floods"] = floods
        raw["flood_settings"] = {"connections": FLOOD_CONNECTIONS, "legit_connections": FLOOD_LEGIT_CONNECTIONS,
                                 "auth_delay_ms": FLOOD_AUTH_DELAY_MS, "keys": FLOOD_KEYS}
    summary, targets = write_report(raw, s.out_dir)
    print_verdicts(label, summary, targets, raw["noise"])
    print(f"\n{label}: results in {s.out_dir / 'results.md'}, plot {s.out_dir / 'results.png'}, "
          f"raw data {s.out_dir / 'raw' / 'results.json'}; logs in {s.work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
