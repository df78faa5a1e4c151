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

from scenarios import EXTRA_RATIOS, KEY_FORMAT, NUM_KEYS, PACED_CONNECTIONS, PACED_DELAY_MS, SCENARIOS, TARGETS


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
        out[scn.name] = {
            "title": scn.title,
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


def evaluate_targets(summary: dict, runs: list[dict]) -> list[dict]:
    rows = []
    for t in TARGETS:
        if t.num not in summary or t.den not in summary:
            continue
        if t.kind == "cpu":
            value = cpu_ratio(summary, t.num, t.den)
            rps = summary[t.num]["rps_median"] / summary[t.den]["rps_median"]
            pr = paired_cpu_ratios(runs, t.num, t.den)
            rows.append({"label": t.label, "num": t.num, "den": t.den, "kind": t.kind, "value": value,
                         "shown": f"{value:.2f}", "target": f"≥ {t.threshold:g}", "met": value >= t.threshold,
                         "spread": f"{min(pr):.2f}–{max(pr):.2f}" if pr else "",
                         "by_cpu": f"req/s: {rps:.2f}"})
        elif t.kind == "cpu_delta":
            value = summary[t.num]["envoy_cpu_us_per_req"] - summary[t.den]["envoy_cpu_us_per_req"]
            pd = paired_cpu_deltas(runs, t.num, t.den)
            rows.append({"label": t.label, "num": t.num, "den": t.den, "kind": t.kind, "value": value,
                         "shown": f"{value:+.1f} µs", "target": f"≤ {t.threshold:g} µs",
                         "met": value <= t.threshold,
                         "spread": f"{min(pd):+.1f} to {max(pd):+.1f}" if pd else "", "by_cpu": ""})
        else:
            value = summary[t.num]["paced_p99_ms"] - summary[t.den]["paced_p99_ms"]
            saturated = summary[t.num]["p99_ms"] - summary[t.den]["p99_ms"]
            rows.append({"label": t.label, "num": t.num, "den": t.den, "kind": t.kind, "value": value,
                         "shown": f"{value:+.2f} ms", "target": f"≤ +{t.threshold:g} ms",
                         "met": value <= t.threshold, "spread": f"saturated: {saturated:+.2f} ms", "by_cpu": ""})
    return rows


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
    if key in (("B", "A", "cpu"), ("B", "A_wasm", "cpu_delta")):
        own = f"adds {b - aw:+.1f} µs on top" if "A_wasm" in s else "adds the rest"
        return (f"{bottleneck}: A {a:.1f} µs, B {b:.1f} µs ({b - a:+.1f}).{floor} "
                f"The filter's own work {own}. The Cost model section splits it: the warm request's host "
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
        "| scenario | Envoy CPU µs/req | Envoy CPU use | auth svc CPU µs/req | auth calls / 10k req | Envoy RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in s.items():
        lines.append(f"| {name} | {r['envoy_cpu_us_per_req']:.1f} | {r['envoy_cpu_util']:.0%} "
                     f"| {r['auth_cpu_us_per_req']:.1f} | {r['auth_calls_per_10k']:,.1f} | {r['envoy_rss_mib']:.1f} |")

    lines += ["", "## Targets", "",
              "Judged by Envoy CPU per request (\"by Envoy CPU\" is its inverse ratio: the throughput "
              "ratio if Envoy's worker were the only limit), which is steadier than req/s on a shared "
              "machine; req/s and the paced p99 are beside it.", "",
              "| target | measured | per repetition | beside it | goal | |",
              "|---|---:|---:|---:|---:|---|"]
    for t in targets:
        lines.append(f"| {t['label']} | {t['shown']} | {t['spread']} | {t['by_cpu']} | {t['target']} "
                     f"| {'met' if t['met'] else '**missed**'} |")
    lines += ["", "Other ratios, to explain the targets:", "",
              "| ratio | requests/s | per repetition | by Envoy CPU |", "|---|---:|---:|---:|"]
    for label, num, den in EXTRA_RATIOS:
        if num in s and den in s:
            pr = paired_ratios(runs, num, den)
            lines.append(f"| {label} | {s[num]['rps_median'] / s[den]['rps_median']:.2f} "
                         f"| {min(pr):.2f}–{max(pr):.2f} | {cpu_ratio(s, num, den):.2f} |")

    missed = [t for t in targets if not t["met"]]
    lines += ["", "### Missed targets", ""]
    lines += [f"- **{t['label']}**: {t['shown']}, target {t['target']}. Likely cause: "
              + likely_cause(t, s, filter_cache) for t in missed] or ["None."]

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
    colors = ["#888888" if n in ("A", "A_tls") else "#bbbbbb" if n == "A_wasm" else
              "#d62728" if n == "E" else "#1f77b4" for n in names]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    (ax_rps, ax_cpu), (ax_sat, ax_paced) = axes

    rps = [summary[n]["rps_median"] for n in names]
    err = [[summary[n]["rps_median"] - summary[n]["rps_min"] for n in names],
           [summary[n]["rps_max"] - summary[n]["rps_median"] for n in names]]
    ax_rps.bar(names, rps, yerr=err, capsize=4, color=colors)
    ax_rps.set_title("Throughput, saturating run (median, min–max)")
    ax_rps.set_ylabel("requests/s")

    ax_cpu.bar(names, [summary[n]["envoy_cpu_us_per_req"] for n in names], color=colors, label="Envoy")
    ax_cpu.bar(names, [summary[n]["auth_cpu_us_per_req"] for n in names],
               bottom=[summary[n]["envoy_cpu_us_per_req"] for n in names], color="#ff9f40", label="auth service")
    ax_cpu.set_title("CPU per request")
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
    fig.suptitle("Envoy 1.40 --concurrency 1: bare (grey), no-op wasm (light grey), "
                 "hokusai filter (blue), ext_authz (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(raw: dict, out_dir: Path) -> tuple[dict, list[dict]]:
    summary = summarize(raw["runs"])
    targets = evaluate_targets(summary, raw["runs"])
    raw["summary"], raw["targets"] = summary, targets
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
    write_report(raw, a.out)
    print(f"report: wrote {a.out / 'results.md'} and {a.out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
