#!/usr/bin/env python3
"""Turns the benchmark's raw data into bench/results.md and bench/results.png.

bench.py calls this at the end of `make bench`. To redo the write-up from a kept run:

    .venv/bin/python bench/report.py bench/raw/results.json [--out bench]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import statistics
import sys
from pathlib import Path

import mlflow_calls
from scenarios import (EXTRA_RATIOS, FLOORS, KEY_FORMAT, MIN_REPS_TO_JUDGE, NUM_KEYS, PACED_CONNECTIONS,
                       PACED_DELAY_MS, REPLAY_WARM_HOST_CALLS, SCENARIOS, TARGETS)

WASM_COST_JSON = Path(__file__).resolve().parent / "raw" / "wasm_cost.json"
# The quiet reference: bare Envoy's spread in the quiet run of 2026-12-04 (issue 19).
QUIET_REFERENCE = "1.2% over 8 repetitions in the quiet run of 2026-12-04"


def summarize(runs: list[dict]) -> dict:
    """Per scenario: medians over the repetitions (and the throughput range)."""
    out = {}
    for scn in SCENARIOS:
        rs = [r for r in runs if r["scenario"] == scn.name]
        if not rs:
            continue

        def med(f):
            return statistics.median(f(r) for r in rs)

        rps = [r["wrk"]["rps"] for r in rs]
        cpu = [r["cpu_us_per_request"]["envoy"] for r in rs]
        paced_p99 = [r["paced"]["latency_us"]["p99"] / 1000 for r in rs]
        out[scn.name] = {
            "title": scn.title,
            "listener": scn.listener,
            "reps": len(rs),
            "rps_median": statistics.median(rps),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "p50_ms": med(lambda r: r["wrk"]["latency_us"]["p50"] / 1000),
            "p99_ms": med(lambda r: r["wrk"]["latency_us"]["p99"] / 1000),
            "paced_rps": med(lambda r: r["paced"]["rps"]),
            "paced_p50_ms": med(lambda r: r["paced"]["latency_us"]["p50"] / 1000),
            "paced_p99_ms": med(lambda r: r["paced"]["latency_us"]["p99"] / 1000),
            "errors": sum(sum(r[phase]["errors"].values()) for r in rs for phase in ("wrk", "paced")),
            "auth_calls_per_10k": med(lambda r: r["auth_calls_per_10k"]),
            "envoy_cpu_us_per_req": med(lambda r: r["cpu_us_per_request"]["envoy"]),
            # The scenario's own noise: how far its repetitions landed from each other.
            "envoy_cpu_min": min(cpu),
            "envoy_cpu_max": max(cpu),
            "envoy_cpu_spread_pct": 100 * (max(cpu) - min(cpu)) / statistics.median(cpu),
            "paced_p99_min_ms": min(paced_p99),
            "paced_p99_max_ms": max(paced_p99),
            "auth_cpu_us_per_req": med(lambda r: r["cpu_us_per_request"]["auth"]),
            "client_envoy_cpu_us_per_req": (med(lambda r: r["cpu_us_per_request"]["client_envoy"])
                                            if "client_envoy" in rs[0]["cpu_us_per_request"] else None),
            # Share of one core Envoy used while saturated: ~1.0 means its worker was the bottleneck.
            "envoy_cpu_util": med(lambda r: r["cpu_s"]["envoy"] / (r["wrk"]["duration_us"] / 1e6)),
            "envoy_rss_mib": med(lambda r: r["envoy_memory_kib"].get("VmRSS", 0) / 1024),
        }
    return out


def paired_ratios(runs: list[dict], num: str, den: str) -> list[float]:
    """Ratios within each repetition: the two ran close together, so drift cancels."""
    by = {(r["scenario"], r["rep"]): r["wrk"]["rps"] for r in runs}
    return [by[(num, rep)] / by[(den, rep)] for (s, rep) in by if s == num and (den, rep) in by]


def _cpu_by_rep(runs: list[dict]) -> dict:
    return {(r["scenario"], r["rep"]): r["cpu_us_per_request"]["envoy"] for r in runs
            if r.get("cpu_us_per_request", {}).get("envoy")}


def paired_cpu_ratios(runs: list[dict], num: str, den: str) -> list[float]:
    """The Envoy-CPU ratio within each repetition."""
    by = _cpu_by_rep(runs)
    return [by[(den, rep)] / by[(num, rep)] for (s, rep) in by if s == num and (den, rep) in by]


def paired_cpu_deltas(runs: list[dict], num: str, den: str) -> list[float]:
    by = _cpu_by_rep(runs)
    return [by[(num, rep)] - by[(den, rep)] for (s, rep) in by if s == num and (den, rep) in by]


def cpu_ratio(summary: dict, num: str, den: str) -> float:
    """The throughput ratio if Envoy's worker were the only bottleneck: the inverse ratio of
    Envoy CPU per request. Steadier than req/s on a busy machine."""
    return summary[den]["envoy_cpu_us_per_req"] / summary[num]["envoy_cpu_us_per_req"]


def paired_p99_deltas(runs: list[dict], num: str, den: str) -> list[float]:
    by = {(r["scenario"], r["rep"]): r["paced"]["latency_us"]["p99"] / 1000 for r in runs}
    return [by[(num, rep)] - by[(den, rep)] for (s, rep) in by if s == num and (den, rep) in by]


def noise_summary(raw: dict, summary: dict) -> dict:
    """How quiet the machine was: the bare baseline's spread over the repetitions, the load
    average before and after, and what else ran during the saturating runs."""
    m, runs = raw["machine"], raw["runs"]
    out: dict = {"loadavg_at_start": m.get("loadavg_at_start"), "loadavg_at_end": m.get("loadavg_at_end")}
    if "A" in summary:
        a = summary["A"]
        out["baseline"] = {"median": a["envoy_cpu_us_per_req"], "min": a["envoy_cpu_min"],
                           "max": a["envoy_cpu_max"], "n": a["reps"], "spread_pct": a["envoy_cpu_spread_pct"],
                           "paced_p99_range_ms": a["paced_p99_max_ms"] - a["paced_p99_min_ms"]}
    # Other work, as a share of one CPU, over every saturating run that recorded it with the
    # Envoy pinned (a two-worker Envoy is not, and its runs would mix CPUs).
    pinned = [r["machine"] for r in runs if r.get("machine", {}).get("envoy_cpus")]
    for where in ("envoy_cpus", "other_cpus"):
        parts = [machine[where] for machine in pinned if machine.get(where)]
        if parts:
            out[where] = {k: {"median": statistics.median(p[k] for p in parts), "max": max(p[k] for p in parts)}
                          for k in ("others", "irq", "steal", "idle")}
            out[where]["cpus"] = parts[0]["cpus"]
    loads = [r["machine"]["loadavg_1m_at_start"] for r in runs if r.get("machine")]
    if loads:
        out["loadavg_1m_during"] = {"median": statistics.median(loads), "min": min(loads), "max": max(loads)}
    return out


def judge(value: float, threshold: float, higher_is_better: bool, noise: float, n: int) -> tuple[float, str]:
    """The margin (positive on the target's good side) and the verdict: "not resolved" when
    the margin is no larger than the noise, or too few repetitions measured the noise."""
    margin = value - threshold if higher_is_better else threshold - value
    if n < MIN_REPS_TO_JUDGE or abs(margin) <= noise:
        return margin, "not resolved"
    return margin, "met" if margin > 0 else "missed"


def evaluate_targets(summary: dict, runs: list[dict], noise: dict | None = None) -> list[dict]:
    """Each target with its noise (bench/README.md, "Noise"): the larger of the range of its
    per-repetition values and the bare baseline A's own range in the target's units."""
    base = (noise or {}).get("baseline")
    rows = []
    for t in TARGETS:
        if t.num not in summary or t.den not in summary:
            continue
        if t.kind == "cpu":
            value = cpu_ratio(summary, t.num, t.den)
            per_rep = paired_cpu_ratios(runs, t.num, t.den)
            from_base = value * base["spread_pct"] / 100 if base else 0.0
            rps = summary[t.num]["rps_median"] / summary[t.den]["rps_median"]
            row = {"shown": f"{value:.2f}", "target": f"≥ {t.threshold:g}",
                   "spread": f"{min(per_rep):.2f}–{max(per_rep):.2f}" if per_rep else "",
                   "by_cpu": f"req/s: {rps:.2f}", "unit": ("", 3)}
        elif t.kind == "cpu_delta":
            value = summary[t.num]["envoy_cpu_us_per_req"] - summary[t.den]["envoy_cpu_us_per_req"]
            per_rep = paired_cpu_deltas(runs, t.num, t.den)
            from_base = base["max"] - base["min"] if base else 0.0
            row = {"shown": f"{value:+.1f} µs", "target": f"≤ {t.threshold:g} µs",
                   "spread": f"{min(per_rep):+.1f} to {max(per_rep):+.1f}" if per_rep else "", "by_cpu": "",
                   "unit": (" µs", 1)}
        else:
            value = summary[t.num]["paced_p99_ms"] - summary[t.den]["paced_p99_ms"]
            per_rep = paired_p99_deltas(runs, t.num, t.den)
            from_base = base["paced_p99_range_ms"] if base else 0.0
            saturated = summary[t.num]["p99_ms"] - summary[t.den]["p99_ms"]
            row = {"shown": f"{value:+.2f} ms", "target": f"≤ +{t.threshold:g} ms",
                   "spread": (f"{min(per_rep):+.2f} to {max(per_rep):+.2f}" if per_rep else ""),
                   "by_cpu": f"saturated: {saturated:+.2f} ms", "unit": (" ms", 2)}
        from_reps = max(per_rep) - min(per_rep) if per_rep else 0.0
        noise_value = max(from_reps, from_base)
        margin, verdict = judge(value, t.threshold, t.kind == "cpu", noise_value, len(per_rep))
        unit, digits = row.pop("unit")
        reps_shown, base_shown = f"{from_reps:.{digits}f}{unit}", f"{from_base:.{digits}f}{unit}"
        rows.append({"label": t.label, "num": t.num, "den": t.den, "kind": t.kind, "value": value,
                     "threshold": t.threshold, "margin": margin, "noise": noise_value,
                     "noise_from_reps": from_reps, "noise_from_baseline": from_base, "reps": len(per_rep),
                     "margin_shown": f"{margin:+.{digits}f}{unit}", "noise_shown": f"{noise_value:.{digits}f}{unit}",
                     "noise_from_reps_shown": reps_shown, "noise_from_baseline_shown": base_shown,
                     "verdict": verdict, "met": verdict == "met",
                     "too_few_reps": len(per_rep) < MIN_REPS_TO_JUDGE, **row})
    return rows


def replay_check(wasm: Path) -> dict:
    """Does A_replay still make the warm path's host calls? Compares the list it was built to
    (scenarios.REPLAY_WARM_HOST_CALLS) with the harness's count for the warm path in
    raw/wasm_cost.json, and says when that file is from another build of the filter."""
    try:
        cost = json.loads(WASM_COST_JSON.read_text())
        warm = next(p for p in cost["paths"] if p["name"] == "warm")["host_calls"]
    except (OSError, ValueError, KeyError, StopIteration):
        return {"verdict": "unknown", "text": f"{WASM_COST_JSON.name} has no warm path: run `make cost-model` "
                "to check that A_replay still makes the warm path's host calls."}
    calls = ", ".join(f"{k.removeprefix('proxy_')}" + (f" ×{v}" if v > 1 else "") for k, v in sorted(warm.items()))
    size = wasm.stat().st_size if wasm.exists() else None
    same_build = size is not None and size == cost.get("wasm_bytes")
    if warm != REPLAY_WARM_HOST_CALLS:
        return {"verdict": "differs", "harness": warm,
                "text": f"the warm path's host calls in {WASM_COST_JSON.name} ({calls}) are not the ones A_replay "
                "makes (bench/scenarios.py REPLAY_WARM_HOST_CALLS): update bench/hostcall-cost's replay, or "
                "A_replay is no longer B's floor."}
    text = f"A_replay makes the warm path's host calls as the wasmtime harness counts them: {calls}"
    if not same_build:
        return {"verdict": "other build", "harness": warm,
                "text": text + f" ({WASM_COST_JSON.name} is from a {cost.get('wasm_bytes', 0):,}-byte build of the "
                f"filter, this run's is {size or 0:,} bytes: `make cost-model` rechecks it)."}
    return {"verdict": "same", "harness": warm, "text": text + " (same build)."}


def slot_collisions(max_entries: int) -> int:
    """Bench keys sharing a cache slot with another, if slots are SHA-256[0..8] mod max_entries
    (src/core/verdict/digest.rs). With keys used in turn, each such key misses every time."""
    slots = [int.from_bytes(hashlib.sha256((KEY_FORMAT % i).encode()).digest()[:8], "big") % max_entries
             for i in range(NUM_KEYS)]
    counts = collections.Counter(slots)
    return sum(1 for s in slots if counts[s] > 1)


def likely_cause(t: dict, s: dict, filter_cache: dict) -> str:
    """Why a target was missed, from what the other scenarios measured."""
    def cpu(name):
        return s[name]["envoy_cpu_us_per_req"] if name in s else float("nan")

    a, aw, b, c, a_tls, d, e = (cpu(n) for n in ("A", "A_wasm", "B", "C", "A_tls", "D", "E"))
    floor = (f" A no-op Rust wasm filter (A_wasm) alone costs {aw - a:+.1f} µs and reaches "
             f"{s['A_wasm']['rps_median'] / s['A']['rps_median']:.2f} × A: that is what Envoy's V8 calls per "
             "request (context create, request/response headers, log, done, delete) cost before a filter "
             "does anything." if "A_wasm" in s and "A" in s else "")
    key = (t["num"], t["den"], t["kind"])
    util = s[t["num"]]["envoy_cpu_util"]
    if util >= 0.9:
        bottleneck = (f"Envoy's single worker is the bottleneck (it used {util:.0%} of a core in {t['num']}), "
                      "so throughput follows Envoy CPU per request")
    else:
        bottleneck = (f"Envoy used only {util:.0%} of a core in {t['num']}, so part of the limit was elsewhere "
                      "(other work on the machine, or wrk and the upstream on the other CPUs); Envoy CPU per "
                      "request is the steadier comparison")
    floors = ""
    if "A_replay" in s:
        rp = cpu("A_replay")
        floors = (f" Its floors in this run (see \"B against its floors\"): a do-nothing filter making the same host "
                  f"calls (A_replay) takes {rp:.1f} µs, so {rp - a:+.1f} µs of B − A is those calls and any wasm "
                  f"filter's cost, and {b - rp:+.1f} µs the filter's own work in the VM")
        if "A_hdrs" in s:
            floors += (f"; the same five headers added by the route (A_hdrs) cost {cpu('A_hdrs') - a:+.1f} µs over "
                       "bare Envoy")
        floors += "."
    if key in (("B", "A", "cpu"), ("B", "A_wasm", "cpu_delta")):
        own = (f"B − A_wasm ({b - aw:+.1f} µs) is the filter's host calls and its computation together"
               if "A_wasm" in s else "The filter adds the rest")
        return (f"{bottleneck}: A {a:.1f} µs, B {b:.1f} µs ({b - a:+.1f}).{floor}{floors} "
                f"{own}. The Cost model section splits it: the warm request's host "
                "calls (one read of all request headers, the clock, five identity-header writes, the "
                "filter-state write for the access log), each crossing the wasm boundary, and the VM running "
                "the decision. Each request-header write also makes Envoy pick the route again; proxy-wasm "
                "ABI 0.2.1 has no header write that keeps the route, so that part needs Envoy, not the filter.")
    if key == ("B", "A", "p99"):
        return (f"each request spends the filter's CPU time (about {b - a:.0f} µs of Envoy CPU on this machine) "
                "in the worker before it is forwarded; on a small shared machine scheduling adds to the tail.")
    if key == ("C", "A_tls", "cpu"):
        return (f"{bottleneck}: A_tls {a_tls:.1f} µs, C {c:.1f} µs ({c - a_tls:+.1f}).{floor} "
                "The internal path copies Envoy's x-forwarded-client-cert (the URL-encoded certificate, a few "
                "KB) into the VM with the other request headers, reads connection.mtls once and writes the "
                "identity headers (see the Cost model section). The client-side Envoy shares the other CPU(s) "
                "with wrk and the upstream, which can cap both A_tls and C.")
    if key == ("B", "E", "rps"):
        return (f"on loopback, ext_authz's per-request callout costs Envoy only {e - a:+.1f} µs over bare Envoy, "
                f"not much more than the wasm filter's warm-cache path ({b - a:+.1f} µs), and the dev auth "
                f"service answers in microseconds ({s['E']['auth_cpu_us_per_req']:.0f} µs CPU per call). E's cost "
                "grows with real network latency and a slower auth service; B's does not.")
    if key == ("D", "E", "cpu") and {"D_call", "D_replay"} <= s.keys():
        call, replay = s["D_call"]["envoy_cpu_us_per_req"], s["D_replay"]["envoy_cpu_us_per_req"]
        return (f"a miss costs the filter {d - a:+.1f} µs of Envoy CPU per request against {e - a:+.1f} µs for "
                f"ext_authz. A wasm filter that does nothing but make the same callout and resume (D_call) "
                f"already costs {call - a:+.1f} µs, {call - e:+.1f} µs more than ext_authz's whole check: that is "
                f"the floor of any proxy-wasm callout in Envoy 1.40 (the call made through the ABI, the reply "
                f"delivered into the VM, the request resumed from it). The miss's other host calls (its reads, "
                f"the two cache slots and the verdict's write, copying the reply in, the identity headers and "
                f"the access-log record; D_replay) add {replay - call:+.1f} µs, and the filter's own work in the "
                f"VM {d - replay:+.1f} µs (see \"The miss path by part\"). So no work the filter leaves out can "
                "reach ext_authz here; only a host without the VM boundary could (ROADMAP: the same core as an "
                "Envoy dynamic module).")
    if key == ("D", "E", "cpu"):
        return (f"a miss costs the filter {d - a:+.1f} µs of Envoy CPU per request against {e - a:+.1f} µs for "
                f"ext_authz.{floor} On top of that floor the filter builds a JSON body in the VM, dispatches "
                "the call through the wasm ABI, copies the reply's headers and body back into the VM, parses "
                "the JSON, writes the verdict to shared data and resumes the request, which then pays the warm "
                "path's header writes too; ext_authz makes the same HTTP call natively and copies three "
                f"headers. The auth service also spends more per call on the JSON body "
                f"({s['D']['auth_cpu_us_per_req']:.0f} vs {s['E']['auth_cpu_us_per_req']:.0f} µs CPU), on "
                "the same two cores.")
    return "not analysed."


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def noise_markdown(noise: dict, reps: int) -> list[str]:
    """The "Noise" section: how quiet the machine was during this run."""
    lines = ["## Noise: how quiet the machine was", ""]
    start, end = noise.get("loadavg_at_start"), noise.get("loadavg_at_end")
    if start:
        lines.append(f"- Load average (1, 5, 15 min) before the run: {' '.join(start)}"
                     + (f"; after it: {' '.join(end)} (the bench itself keeps about two CPUs busy, so this includes "
                        "its own load)" if end else "") + ".")
    during = noise.get("loadavg_1m_during")
    if during:
        lines.append(f"- 1-minute load average as each saturating run started: median {during['median']:.2f} "
                     f"({during['min']:.2f} to {during['max']:.2f}); this bench alone accounts for about 2.")
    base = noise.get("baseline")
    if base:
        lines.append(f"- **Bare Envoy (A), the baseline:** {base['median']:.1f} µs of Envoy CPU per request, "
                     f"{base['min']:.1f} to {base['max']:.1f} over {base['n']} repetitions: a spread of "
                     f"**{base['spread_pct']:.1f}%** ((max − min) / median; {QUIET_REFERENCE}). Every other "
                     "scenario's spread is in the cost table below.")
    for where, what in (("envoy_cpus", "the Envoy's own CPU"), ("other_cpus", "the other CPU(s)")):
        w = noise.get(where)
        if w:
            ours = ("" if where == "envoy_cpus" else
                    " besides this bench's wrk, upstream, auth service and client-side Envoy")
            lines.append(f"- Other work on {what}{ours}, during the saturating runs: {_pct(w['others']['median'])} "
                         f"of a CPU (median; up to {_pct(w['others']['max'])}); interrupts {_pct(w['irq']['median'])}; "
                         f"steal (the hypervisor's other guests) {_pct(w['steal']['median'])} (up to "
                         f"{_pct(w['steal']['max'])}). From /proc/stat, less our processes' own CPU time.")
    if len(lines) == 2:
        lines.append("- Not recorded by the bench.py that made this run.")
    if reps < MIN_REPS_TO_JUDGE:
        lines.append(f"- Only {reps} repetition(s): too few to measure the noise, so no target is judged.")
    return lines + [""]


def floors_markdown(s: dict, runs: list[dict], replay: dict | None) -> list[str]:
    """B against each floor: what it costs over doing nothing, over carrying the same
    headers by route, over any wasm filter, over its own host calls."""
    floors = [(f, what) for f, what in FLOORS if f in s]
    if "B" not in s or not floors:
        return []
    lines = ["", "## B against its floors", "",
             "What the filter's warm path (B) costs over each floor, measured in the same run: bare Envoy; Envoy "
             "adding the same five identity headers by route (what injecting identity costs without a filter); a "
             "no-op wasm filter (what any wasm filter costs); and a do-nothing wasm filter making the warm path's "
             "host calls once per request (bench/hostcall-cost `replay_warm 1`: what those calls cost, without "
             "the filter's computation). B − A_replay is the filter's own work in the VM.", "",
             "| floor | what it is | floor µs/req | floor × A by CPU | B − floor µs/req | per repetition "
             "| B / floor by CPU | per repetition |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    b = s["B"]["envoy_cpu_us_per_req"]
    for f, what in floors:
        fc = s[f]["envoy_cpu_us_per_req"]
        deltas = paired_cpu_deltas(runs, "B", f)
        ratios = paired_cpu_ratios(runs, "B", f)
        times_a = f"{cpu_ratio(s, f, 'A'):.2f}" if "A" in s else ""
        lines.append(f"| {f} | {what} | {fc:.1f} | {times_a} | {b - fc:+.1f} "
                     f"| {min(deltas):+.1f} to {max(deltas):+.1f} | {fc / b:.2f} "
                     f"| {min(ratios):.2f}–{max(ratios):.2f} |")
    if replay:
        lines += ["", f"A_replay's host calls: {replay['text']}"]
    return lines


def production_markdown(mlflow: dict | None, s: dict) -> list[str]:
    """The filter's cost next to MLflow's own time per call, through the real stack."""
    if not mlflow:
        return []
    lines = ["", "## In production terms", ""]
    if "error" in mlflow:
        return lines + [f"The MLflow measurement failed in this run: {mlflow['error']}"]
    rows = mlflow_calls.summarize(mlflow)
    lines += [f"Real MLflow {mlflow['mlflow_version']} (sqlite, proxied artifacts, on this machine) answering typical "
              "client calls one at a time, directly and through Envoy (the production listener) without and with "
              f"the filter (a warm key; auth-service calls while measuring: {mlflow['auth_calls_while_measuring']}). "
              f"{mlflow['rounds']} round(s) of {mlflow['per_batch']} requests per call and route, the routes "
              "interleaved; CPU from /proc (MLflow: its whole process group). The filter adds: the filter route's "
              "Envoy CPU per request minus the bare route's, round by round (median, and the range over rounds: "
              "its noise). Latencies are medians over all requests of a route (client side, keep-alive).", "",
              *mlflow_calls.table(rows), "", mlflow_calls.sentence(rows) + " " + mlflow_calls.idle_sentence(mlflow)]
    if {"A", "B"} <= s.keys():
        warm = s["B"]["envoy_cpu_us_per_req"] - s["A"]["envoy_cpu_us_per_req"]
        mlflow_cpu = statistics.median(r["mlflow_cpu_us"]["median"] for r in rows)
        text = (f"Under saturation (the scenarios above) the warm path costs {warm:+.1f} µs of Envoy CPU per request "
                f"over bare Envoy: {100 * warm / mlflow_cpu:.2f}% of the CPU MLflow spends on the median call here")
        if {"A", "D"} <= s.keys():
            miss = s["D"]["envoy_cpu_us_per_req"] - s["A"]["envoy_cpu_us_per_req"]
            text += (f"; a cache miss (once per key per `cache.ttl_s`) costs {miss:+.1f} µs "
                     f"({100 * miss / mlflow_cpu:.2f}%)")
        lines += ["", text + "."]
    return lines


def kept_cost_model_section(path: Path) -> str:
    """The "Cost model" section bench/cost_model.py wrote into results.md, carried over so a
    new benchmark report does not drop it (it has its own raw data and make targets)."""
    begin, end = "<!-- cost-model:begin", "<!-- cost-model:end -->"
    try:
        text = path.read_text()
    except OSError:
        return ""
    if begin not in text or end not in text:
        return ""
    section = begin + text.split(begin, 1)[1].split(end, 1)[0] + end
    return "\n\n" + section + "\n"


def flood_markdown(floods: list[dict] | None, settings: dict | None) -> list[str]:
    """Issue 19's flood: a cached key next to a flood of keys nobody issued, against a slow
    auth service, the filter (F) against ext_authz (F_ext)."""
    if not floods or not settings:
        return []
    by: dict[str, list[dict]] = {}
    for r in floods:
        by.setdefault(r["scenario"], []).append(r)

    def med(rows, f):
        vals = sorted(f(r) for r in rows)
        return vals[len(vals) // 2]

    rows = {}
    for name, rs in by.items():
        rows[name] = {
            "legit": med(rs, lambda r: r["legit"]["rps"]),
            "p50": med(rs, lambda r: r["legit"]["latency_us"]["p50"]) / 1000,
            "p99": med(rs, lambda r: r["legit"]["latency_us"]["p99"]) / 1000,
            "flood": med(rs, lambda r: r["flood"].get("rps", 0)),
            "most": max(r["auth_stats"].get("max_in_flight", 0) for r in rs),
            "cpu": med(rs, lambda r: r["envoy_cpu_us_per_answer"]),
            "n": len(rs),
        }
    lines = ["", "## Under a flood of unknown keys", "",
             f"A client with a key the auth service knows ({settings['legit_connections']} connections, its "
             f"verdict cached after the first request) next to a flood of keys nobody issued "
             f"({settings['connections']} connections, {settings['keys']:,} keys in turn), while the auth service "
             f"takes {settings['auth_delay_ms']} ms per call. One Envoy worker; the filter's in-flight cap is 256. "
             "Medians over the repetitions; `calls at once` is the most the auth service served together.", "",
             "| | what | known key req/s | its p50 / p99 ms | flood answers/s | auth calls at once | "
             "Envoy CPU µs per answer |",
             "|---|---|---:|---:|---:|---:|---:|"]
    titles = {"F": "the filter", "F_ext": "ext_authz"}
    for name, r in rows.items():
        lines.append(f"| {name} | {titles.get(name, name)} | {r['legit']:,.0f} | {r['p50']:.1f} / {r['p99']:.1f} | "
                     f"{r['flood']:,.0f} | {r['most']} | {r['cpu']:.1f} |")
    if {"F", "F_ext"} <= rows.keys():
        f, e = rows["F"], rows["F_ext"]
        kept = f["legit"] >= e["legit"] and f["legit"] + f["flood"] >= e["legit"] + e["flood"]
        held = f["most"] <= 256
        lines += ["", f"Target (issue 19): under the flood the filter keeps at least ext_authz's throughput — "
                  f"known key {f['legit']:,.0f} against {e['legit']:,.0f} req/s, all answers "
                  f"{f['legit'] + f['flood']:,.0f} against {e['legit'] + e['flood']:,.0f}/s: "
                  f"**{'met' if kept else 'missed'}**; with its in-flight cap holding — at most {f['most']} calls "
                  f"at once against 256 (ext_authz: {e['most']}): **{'met' if held else 'missed'}**. "
                  "The flood's keys get 401 once the auth service answers, or 503 at once past the cap; "
                  "the known key never waits on the auth service."]
    return lines


def miss_parts_markdown(s: dict) -> list[str]:
    """The miss path by part (`make cost-model-miss`): what each group of a miss's host
    calls adds to the bare callout, against ext_authz."""
    names = ["E", "D_call", "D_reads", "D_shared", "D_reply", "D_writes", "D_replay", "D"]
    if not {"D_call", "D_replay", "D"} <= s.keys():
        return []
    lines = ["", "## The miss path by part", "",
             "Envoy CPU per request of a cache miss, built up: a do-nothing wasm filter that only makes the "
             "callout and resumes (D_call, the floor of any proxy-wasm callout), the same with one group of "
             "the miss's host calls each, with all of them (D_replay), and the filter itself (D); ext_authz (E) "
             "for comparison.", "",
             "| scenario | what | Envoy CPU µs/req | over D_call |", "|---|---|---:|---:|"]
    base = s["D_call"]["envoy_cpu_us_per_req"]
    for n in names:
        if n in s:
            v = s[n]["envoy_cpu_us_per_req"]
            lines.append(f"| {n} | {s[n]['title']} | {v:.1f} | {v - base:+.1f} |")
    return lines


def write_markdown(raw: dict, summary: dict, targets: list[dict], path: Path) -> None:
    m, st, runs = raw["machine"], raw["settings"], raw["runs"]
    s = summary
    filter_cache = raw.get("filter_cache", {})
    lines = [
        "# Benchmark: hokusai auth filter vs bare Envoy vs Envoy's ext_authz",
        "",
        f"Generated by `make bench` (bench/bench.py) on {m['date_utc']}, commit {m['git_commit']}. "
        "Raw data: [raw/results.json](raw/results.json); plot: [results.png](results.png); "
        "method: [README.md](README.md).",
        "",
    ]
    failed = {name: r["errors"] for name, r in s.items() if r["errors"]}
    if failed:
        lines += ["> **Warning:** some requests failed (HTTP status ≥ 400, or socket errors and timeouts): "
                  + ", ".join(f"{n} {e:,}" for n, e in failed.items())
                  + ". Those scenarios' numbers are suspect; see the wrk output in raw/results.json.", ""]
    load = float(m["loadavg_at_start"][0])
    if load > 0.25 * (m["nproc"] or 1):
        lines += [f"> **Warning:** the load average was {load:.2f} when this run started: other work on the "
                  "machine makes these numbers noisy. Rerun `make bench` on a quiet machine.", ""]
    unresolved = [t for t in targets if t["verdict"] == "not resolved"]
    if unresolved and all(t["too_few_reps"] for t in unresolved):
        lines += [f"> **Not resolved:** with {st['reps']} repetition(s) this run cannot measure its own noise, so no "
                  f"target is judged. `make bench` runs 5; use at least {MIN_REPS_TO_JUDGE}.", ""]
    elif unresolved:
        lines += [f"> **Not resolved:** {len(unresolved)} of {len(targets)} targets are inside this run's noise "
                  "(their distance from the threshold is no larger than the noise; see Targets), so this run says "
                  "neither met nor missed for them: " + "; ".join(t["label"] for t in unresolved)
                  + ". Rerun `make bench` on a quieter machine.", ""]
    replay = raw.get("replay_check")
    if replay and replay["verdict"] == "differs":
        lines += [f"> **Warning:** {replay['text']}", ""]
    lines += [
        "## Setup", "",
        "| | |", "|---|---|",
        f"| CPU | {m['cpu_model']}, `nproc` = {m['nproc']}, {m['memory_gib']} GiB |",
        f"| kernel / OS | {m['kernel']} / {m['os']} |",
        f"| Envoy | {m['envoy']}; `--concurrency 1` (B1000_c2: 2); V8 wasm runtime |",
        f"| filter | `hokusai_auth_filter.wasm`, {m['wasm_bytes']:,} bytes; {m['rustc']} |",
        f"| load | {m['wrk']}, one thread. Saturating run: `-c {st['connections']} -d {st['duration_s']:g}s` "
        f"after {st['warmup_s']:g}s warm-up. Paced run: {st['paced_connections']} connections × 1 request "
        f"per {st['paced_delay_ms']} ms (≤ {st['paced_connections'] * 1000 // st['paced_delay_ms']} req/s), "
        f"{st['paced_s']:g}s |",
        f"| CPUs | " + (f"Envoy under test pinned to CPU {raw['cpus']['envoy']}; wrk, echo-upstream, the dev auth "
                       f"service and the client-side Envoy on CPU {raw['cpus']['others']}" if raw.get("cpus")
                       else "not pinned") + " |",
        f"| repetitions | {st['reps']}, interleaved (every scenario once, then again; order rotated) |",
        f"| request | `GET {raw['request_path']}` → echo-upstream (devstack), same for every scenario |",
        "",
        *noise_markdown(raw["noise"], st["reps"]),
        "## Results", "",
        "Medians over the repetitions (req/s also min–max). Latency is wrk's, in ms.",
        "",
        "| scenario | what | req/s | min–max | p50 | p99 | paced p50 | paced p99 | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in s.items():
        lines.append(f"| {name} | {r['title']} | {r['rps_median']:,.0f} | {r['rps_min']:,.0f}–{r['rps_max']:,.0f} "
                     f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['paced_p50_ms']:.2f} | {r['paced_p99_ms']:.2f} "
                     f"| {r['errors']} |")
    lines += [
        "", "Cost, from the saturating run: CPU time per request of Envoy (all its threads) and of the "
        "dev auth service; auth-service calls per 10,000 requests (its `/__dev/stats` counters, reset "
        "after warm-up); Envoy's RSS after the run.", "",
        "Envoy CPU µs/req is the median over the repetitions, with their min–max and spread "
        "((max − min) / median: the scenario's own noise); × bare is bare Envoy's CPU per request (A, or A_tls "
        "for the TLS scenarios) divided by the scenario's: the throughput ratio if Envoy's worker were the only "
        "limit.", "",
        "| scenario | Envoy CPU µs/req | min–max | spread | × bare by CPU | Envoy CPU use | auth svc CPU µs/req "
        "| auth calls / 10k req | Envoy RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in s.items():
        bare = "A_tls" if r.get("listener") == "tls" else "A"
        times_a = f"{cpu_ratio(s, name, bare):.2f}" if bare in s else ""
        lines.append(f"| {name} | {r['envoy_cpu_us_per_req']:.1f} | {r['envoy_cpu_min']:.1f}–{r['envoy_cpu_max']:.1f} "
                     f"| {r['envoy_cpu_spread_pct']:.1f}% | {times_a} | {r['envoy_cpu_util']:.0%} "
                     f"| {r['auth_cpu_us_per_req']:.1f} | {r['auth_calls_per_10k']:,.1f} | {r['envoy_rss_mib']:.1f} |")
    lines += floors_markdown(s, runs, raw.get("replay_check"))

    lines += ["", "## Targets", "",
              "Judged by Envoy CPU per request (\"by Envoy CPU\" is its inverse ratio: the throughput "
              "ratio if Envoy's worker were the only limit), which is steadier than req/s on a shared "
              "machine; req/s and the paced p99 are beside it. Margin: the distance from the goal, positive on "
              "its good side. Noise: the larger of the per-repetition values' range and bare Envoy's own range "
              "over the repetitions in the target's units; a margin no larger than the noise is **not "
              f"resolved**, and so is every target with fewer than {MIN_REPS_TO_JUDGE} repetitions "
              "(bench/README.md, \"Noise\").", "",
              "| target | measured | per repetition | beside it | goal | margin | noise | |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for t in targets:
        verdict = {"met": "met", "missed": "**missed**", "not resolved": "**not resolved**"}[t["verdict"]]
        lines.append(f"| {t['label']} | {t['shown']} | {t['spread']} | {t['by_cpu']} | {t['target']} "
                     f"| {t['margin_shown']} | {t['noise_shown']} | {verdict} |")
    lines += ["", "Other ratios, to explain the targets:", "",
              "| ratio | requests/s | per repetition | by Envoy CPU |", "|---|---:|---:|---:|"]
    for label, num, den in EXTRA_RATIOS:
        if num in s and den in s:
            pr = paired_ratios(runs, num, den)
            lines.append(f"| {label} | {s[num]['rps_median'] / s[den]['rps_median']:.2f} "
                         f"| {min(pr):.2f}–{max(pr):.2f} | {cpu_ratio(s, num, den):.2f} |")

    missed = [t for t in targets if t["verdict"] == "missed"]
    lines += ["", "### Missed targets", ""]
    lines += [f"- **{t['label']}**: {t['shown']}, target {t['target']}. Likely cause: "
              + likely_cause(t, s, filter_cache) for t in missed] or ["None."]
    if unresolved:
        lines += ["", "### Not resolved", ""]
        lines += [f"- **{t['label']}**: {t['shown']}, target {t['target']}: margin {t['margin_shown']}, noise "
                  f"{t['noise_shown']} (the range over {t['reps']} repetitions {t['noise_from_reps_shown']}; bare "
                  f"Envoy's spread in these units {t['noise_from_baseline_shown']}). "
                  + ("Leaning met; " if t["margin"] > 0 else "Leaning missed; ")
                  + "rerun on a quieter machine to tell." for t in unresolved]

    lines += production_markdown(raw.get("mlflow"), s)
    lines += flood_markdown(raw.get("floods"), raw.get("flood_settings"))
    lines += miss_parts_markdown(s)
    lines += ["", "## What it costs, and what it saves the auth service", ""]

    def delta(name, base="A"):
        return s[name]["envoy_cpu_us_per_req"] - s[base]["envoy_cpu_us_per_req"]

    if {"A", "B"} <= s.keys():
        lines.append(f"- Warm cache (B): {delta('B'):+.1f} µs of Envoy CPU per request over bare Envoy "
                     f"({s['A']['envoy_cpu_us_per_req']:.1f} µs), no auth-service call.")
    if {"A", "A_wasm"} <= s.keys():
        lines.append(f"- Of that, {delta('A_wasm'):+.1f} µs is what any wasm filter costs (A_wasm, a no-op filter).")
    if {"A_tls", "C"} <= s.keys():
        lines.append(f"- Internal mTLS path (C): {delta('C', 'A_tls'):+.1f} µs over the same TLS listener "
                     "without the filter, no auth-service call.")
    if {"A", "D"} <= s.keys():
        lines.append(f"- Cache miss (D): {delta('D'):+.1f} µs of Envoy CPU per request, plus "
                     f"{s['D']['auth_cpu_us_per_req']:.1f} µs in the auth service.")
    if {"A", "E"} <= s.keys():
        lines.append(f"- ext_authz (E): {delta('E'):+.1f} µs of Envoy CPU per request, plus "
                     f"{s['E']['auth_cpu_us_per_req']:.1f} µs in the auth service, on every request.")
    calls = ", ".join(f"{n} {s[n]['auth_calls_per_10k']:,.0f}" for n in ("B", "B1000", "D", "E") if n in s)
    lines.append(f"- Auth-service calls per 10,000 requests: {calls}. ext_authz calls once per request; "
                 "the filter once per key per `cache.ttl_s` (300 s by default).")
    if "B1000" in s and s["B1000"]["auth_calls_per_10k"] > 10 and filter_cache.get("max_entries"):
        n = filter_cache["max_entries"]
        k = slot_collisions(n)
        lines.append(f"- B1000 still calls out after warm-up: with `cache.max_entries` = {n:,}, {k} of the "
                     f"{NUM_KEYS:,} keys share a cache slot with another key if each key has exactly one slot "
                     f"(SHA-256 mod max_entries, src/core/verdict/digest.rs), and keys used in turn evict each other: "
                     f"≈ {k * 10_000 / NUM_KEYS:,.0f} calls per 10k expected, "
                     f"{s['B1000']['auth_calls_per_10k']:,.0f} measured.")
    rss = ", ".join(f"{n} {s[n]['envoy_rss_mib']:.1f}" for n in ("A", "A_wasm", "B", "E", "A_tls", "C") if n in s)
    lines.append(f"- Envoy RSS (MiB): {rss}.")
    lines.append(f"- `hokusai_auth_filter.wasm`: {m['wasm_bytes']:,} bytes.")
    lines += ["", "## Caveats", "",
              "- One machine runs everything: wrk, Envoy's single worker, echo-upstream, the dev auth service "
              "and, for A_tls and C, a client-side Envoy that originates the mTLS. Throughput is the whole "
              "system's; the Envoy CPU µs/request column isolates Envoy's own cost.",
              "- The saturating run is closed-loop, so its latencies are mostly queueing "
              "(connections ÷ throughput); the paced run compares latency at the same offered load.",
              "- Loopback only: no network between Envoy and the auth service, which flatters every scenario "
              "that calls it per request (D, E).",
              "- No access log in any scenario (envoy/envoy.yaml logs every request to stdout); otherwise the "
              "Envoy configs are envoy/envoy.yaml's, with only the HTTP filter under test changed.",
              "- Bench keys have no rate limit; a key with `rate_limit_per_hour` adds a shared-data "
              "read and write per request.", ""]
    path.write_text("\n".join(lines) + kept_cost_model_section(path))


def plot(summary: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib not available; no plot written", file=sys.stderr)
        return
    names = list(summary)
    xs = list(range(len(names)))
    colors = ["#888888" if n in ("A", "A_tls") else "#bbbbbb" if n in ("A_wasm", "A_hdrs", "A_replay") else
              "#d62728" if n == "E" else "#1f77b4" for n in names]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    (ax_rps, ax_cpu), (ax_sat, ax_paced) = axes

    rps = [summary[n]["rps_median"] for n in names]
    err = [[summary[n]["rps_median"] - summary[n]["rps_min"] for n in names],
           [summary[n]["rps_max"] - summary[n]["rps_median"] for n in names]]
    ax_rps.bar(names, rps, yerr=err, capsize=4, color=colors)
    ax_rps.set_title("Throughput, saturating run (median, min–max)")
    ax_rps.set_ylabel("requests/s")

    cpu_err = [[summary[n]["envoy_cpu_us_per_req"] - summary[n].get("envoy_cpu_min", summary[n]["envoy_cpu_us_per_req"])
                for n in names],
               [summary[n].get("envoy_cpu_max", summary[n]["envoy_cpu_us_per_req"]) - summary[n]["envoy_cpu_us_per_req"]
                for n in names]]
    ax_cpu.bar(names, [summary[n]["envoy_cpu_us_per_req"] for n in names], yerr=cpu_err, capsize=4, color=colors,
               label="Envoy (min–max over repetitions)")
    ax_cpu.bar(names, [summary[n]["auth_cpu_us_per_req"] for n in names],
               bottom=[summary[n]["envoy_cpu_us_per_req"] for n in names], color="#ff9f40", label="auth service")
    ax_cpu.set_title("CPU per request (median)")
    ax_cpu.set_ylabel("µs")
    ax_cpu.legend()

    w = 0.4
    for ax, p50, p99, title in ((ax_sat, "p50_ms", "p99_ms", "Latency, saturating run (queueing included)"),
                                (ax_paced, "paced_p50_ms", "paced_p99_ms",
                                 f"Latency, paced run (≤ {PACED_CONNECTIONS * 1000 // PACED_DELAY_MS} req/s)")):
        ax.bar([x - w / 2 for x in xs], [summary[n][p50] for n in names], w, label="p50")
        ax.bar([x + w / 2 for x in xs], [summary[n][p99] for n in names], w, label="p99")
        ax.set_xticks(xs, names)
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.legend()
    fig.suptitle("Envoy 1.40 --concurrency 1: bare (grey), floors: route headers, no-op wasm, host-call "
                 "replay (light grey), hokusai filter (blue), ext_authz (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(raw: dict, out_dir: Path) -> tuple[dict, list[dict]]:
    summary = summarize(raw["runs"])
    noise = noise_summary(raw, summary)
    targets = evaluate_targets(summary, raw["runs"], noise)
    raw["summary"], raw["noise"], raw["targets"] = summary, noise, targets
    (out_dir / "raw").mkdir(parents=True, exist_ok=True)
    (out_dir / "raw" / "results.json").write_text(json.dumps(raw, indent=1) + "\n")
    write_markdown(raw, summary, targets, out_dir / "results.md")
    plot(summary, out_dir / "results.png")
    return summary, targets


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("raw", type=Path, help="a results.json written by bench.py")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    a = p.parse_args()
    raw = json.loads(a.raw.read_text())
    _, targets = write_report(raw, a.out)
    for t in targets:
        print(f"  {t['label'][:40]:40} {t['shown']:>10}  target {t['target']:10} margin {t['margin_shown']:>10}  "
              f"noise {t['noise_shown']:9} {t['verdict'].upper()}")
    print(f"report: wrote {a.out / 'results.md'} and {a.out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
