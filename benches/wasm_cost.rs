//! The cost model's in-VM view (bench/README.md, "Cost model"): for each request path of
//! the release `.wasm`, the wasm instructions it runs (wasmtime fuel, in the proxy-wasm host
//! the tests use) and the host calls it makes. Fuel is deterministic, so one run is enough;
//! the table says so when a path's samples differ.
//!
//! ```text
//! cargo bench --profile ci --bench wasm_cost -- [--requests N] [--json PATH]
//!     [--compare LABEL=PATH ...]
//! ```
//! `--compare` measures the warm external request of other builds of the filter (e.g. other
//! opt-levels) instead of the full table. `make cost-model` runs the full table, plus, when
//! bench/hostcall-cost is built (`--hostcall PATH`, default its `make cost-model-envoy`
//! output), the guest-side fuel of one of each host call the Envoy-side probes measure.

#[path = "../tests/harness/mod.rs"]
mod harness;

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use harness::{CalloutReply, Host, Request, Vm};
use sha2::{Digest, Sha256};

const INTERNAL_IDENTITY: &str = "spiffe://hokusai.internal/ns/development/sa/hokusai-api";

/// The counters of one Vm at one moment.
#[derive(Clone, Default)]
struct Counters {
    fuel: u64,
    by_export: BTreeMap<String, u64>,
    host_calls: BTreeMap<String, u64>,
    properties: BTreeMap<String, u64>,
    allocations: u64,
}

impl Counters {
    fn of(vm: &Vm) -> Self {
        Self {
            fuel: vm.fuel_used().expect("a metered Vm"),
            by_export: vm.fuel_by_export(),
            host_calls: vm.host_calls(),
            properties: vm.property_reads(),
            allocations: vm.guest_allocations(),
        }
    }
}

fn minus(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// What one request cost, from stream creation to deletion.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    fuel: u64,
    by_export: BTreeMap<String, u64>,
    host_calls: BTreeMap<String, u64>,
    properties: BTreeMap<String, u64>,
    allocations: u64,
}

fn measure(vm: &mut Vm, request: impl FnOnce(&mut Vm)) -> Sample {
    let before = Counters::of(vm);
    request(vm);
    vm.assert_alive();
    let after = Counters::of(vm);
    Sample {
        fuel: after.fuel - before.fuel,
        by_export: minus(&after.by_export, &before.by_export),
        host_calls: minus(&after.host_calls, &before.host_calls),
        properties: minus(&after.properties, &before.properties),
        allocations: after.allocations - before.allocations,
    }
}

// ---------------------------------------------------------------- requests

fn key(i: usize) -> String {
    format!("hk_bench_{i:04}")
}

/// What Envoy hands the filter for an MLflow client's call on the plain listener: the
/// client's headers plus the connection manager's own (x-forwarded-*, a UUID request id).
fn client_request(path: &str, seq: usize) -> Request {
    Request::get(path)
        .set_header(
            "x-request-id",
            format!("{seq:08x}-5b1e-4c57-9a4e-{:012x}", seq * 7919),
        )
        .header("user-agent", "mlflow-python-client/3.17.0")
        .header("accept-encoding", "gzip, deflate")
        .header("accept", "*/*")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "http")
}

fn external(seq: usize, key_index: usize) -> Request {
    client_request(common::REQUEST_PATH, seq).bearer(&key(key_index))
}

/// The dev auth service's reply for a bench key (devstack `ValidReply`).
fn allow_reply(key_index: usize) -> CalloutReply {
    CalloutReply::json(
        200,
        &format!(
            r#"{{"valid":true,"key_id":"key-bench-{key_index:04}","user_id":"bench-user-{key_index:04}","service_id":"ml-platform","scopes":["mlflow:read","mlflow:write"],"rate_limit_per_hour":null,"expires_at":null}}"#
        ),
    )
}

/// The `x-forwarded-client-cert` Envoy writes on the TLS listener (SANITIZE_SET with
/// subject, cert, uri and dns) for certs/client.crt: `Hash` of the DER, the URL-encoded PEM,
/// the RFC 2253 subject and the URI SAN (the client certificate has no DNS SAN).
fn envoy_xfcc() -> (String, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/client.crt");
    let pem = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}): run `make certs`", path.display()));
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("certs/client.crt is PEM");
    let hash: String = Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let encoded: String = pem
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let xfcc = format!(
        "Hash={hash};Cert=\"{encoded}\";Subject=\"CN=hokusai-api-client\";URI={INTERNAL_IDENTITY}"
    );
    (xfcc, hash)
}

// ---------------------------------------------------------------- the paths

struct Path_ {
    name: &'static str,
    what: &'static str,
    samples: Vec<Sample>,
}

fn vm(host: &Host) -> Vm {
    host.vm(&common::envoy_plugin_config())
        .expect("envoy.yaml's plugin configuration is accepted")
}

/// A forwarded request's whole stream: headers, upstream response, log and teardown.
fn forwarded(vm: &mut Vm, request: Request, auth_path: Option<&str>) {
    let id = vm.send(request);
    let outcome = vm.outcome(id);
    outcome.assert_forwarded();
    assert_eq!(outcome.header("x-auth-path").as_deref(), auth_path);
    vm.respond(id, 200, &[("content-type", "application/json")]);
    vm.finish(id);
}

/// The same for bench/hostcall-cost, whose replays write identity headers of their own.
fn probed(vm: &mut Vm, request: Request) {
    let id = vm.send(request);
    vm.outcome(id).assert_forwarded();
    vm.respond(id, 200, &[("content-type", "application/json")]);
    vm.finish(id);
}

fn warm_external(wasm: &Path, warmup: usize, n: usize) -> Vec<Sample> {
    let host = Host::metered_wasm(wasm);
    let mut vm = vm(&host);
    let id = vm.send(external(0, 0));
    vm.answer_only(allow_reply(0));
    vm.outcome(id).assert_forwarded();
    vm.finish(id);
    for seq in 1..=warmup {
        forwarded(&mut vm, external(seq, 0), Some("external"));
    }
    (0..n)
        .map(|i| {
            measure(&mut vm, |vm| {
                forwarded(vm, external(warmup + 1 + i, 0), Some("external"))
            })
        })
        .collect()
}

/// Another worker validated the keys; this one has never seen them, so each first request
/// finds its verdict in shared data only.
fn shared_only(warmup: usize, n: usize) -> Vec<Sample> {
    let host = Host::metered();
    let mut first = vm(&host);
    for k in 0..warmup + n {
        let id = first.send(external(k, k));
        first.answer_only(allow_reply(k));
        first.finish(id);
    }
    let mut second = vm(&host);
    for k in 0..warmup {
        forwarded(&mut second, external(k, k), Some("external"));
    }
    (warmup..warmup + n)
        .map(|k| {
            measure(&mut second, |vm| {
                forwarded(vm, external(k, k), Some("external"))
            })
        })
        .collect()
}

/// Every request a new key: the callout is dispatched, answered, the verdict stored.
fn miss(warmup: usize, n: usize) -> Vec<Sample> {
    let host = Host::metered();
    let mut vm = vm(&host);
    let one = |vm: &mut Vm, k: usize| {
        let id = vm.send(external(k, k));
        vm.outcome(id).assert_paused();
        vm.answer_only(allow_reply(k));
        let outcome = vm.outcome(id);
        outcome.assert_forwarded();
        assert_eq!(outcome.header("x-auth-path").as_deref(), Some("external"));
        vm.respond(id, 200, &[("content-type", "application/json")]);
        vm.finish(id);
    };
    for k in 0..warmup {
        one(&mut vm, k);
    }
    (warmup..warmup + n)
        .map(|k| measure(&mut vm, |vm| one(vm, k)))
        .collect()
}

fn internal(warmup: usize, n: usize) -> Vec<Sample> {
    let host = Host::metered();
    let mut vm = vm(&host);
    let (xfcc, digest) = envoy_xfcc();
    // What Envoy tells the filter on the allow-listed client's connection (certs/client.crt).
    let request = |seq| {
        client_request(common::REQUEST_PATH, seq)
            .set_header("x-forwarded-proto", "https")
            .xfcc(&xfcc)
            .property("connection.mtls", [1u8])
            .property("connection.sha256_peer_certificate_digest", &digest)
    };
    for seq in 0..warmup {
        forwarded(&mut vm, request(seq), Some("internal"));
    }
    (0..n)
        .map(|i| {
            measure(&mut vm, |vm| {
                forwarded(vm, request(warmup + i), Some("internal"))
            })
        })
        .collect()
}

fn exempt(warmup: usize, n: usize) -> Vec<Sample> {
    let host = Host::metered();
    let mut vm = vm(&host);
    for seq in 0..warmup {
        forwarded(&mut vm, client_request("/health", seq), None);
    }
    (0..n)
        .map(|i| {
            measure(&mut vm, |vm| {
                forwarded(vm, client_request("/health", warmup + i), None)
            })
        })
        .collect()
}

fn no_key(warmup: usize, n: usize) -> Vec<Sample> {
    let host = Host::metered();
    let mut vm = vm(&host);
    let one = |vm: &mut Vm, seq| {
        let id = vm.send(client_request(common::REQUEST_PATH, seq));
        vm.outcome(id).assert_replied(401);
        vm.finish(id);
    };
    for seq in 0..warmup {
        one(&mut vm, seq);
    }
    (0..n)
        .map(|i| measure(&mut vm, |vm| one(vm, warmup + i)))
        .collect()
}

// ---------------------------------------------------------------- report

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

/// The sample whose fuel is the median one, for the breakdown columns.
fn typical(samples: &[Sample]) -> &Sample {
    let m = median(samples.iter().map(|s| s.fuel).collect());
    samples
        .iter()
        .find(|s| s.fuel == m)
        .expect("the median is a sample")
}

fn calls_text(calls: &BTreeMap<String, u64>) -> String {
    calls
        .iter()
        .map(|(name, n)| {
            let short = name.strip_prefix("proxy_").unwrap_or(name);
            if *n == 1 {
                short.to_string()
            } else {
                format!("{short} ×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_map(map: &BTreeMap<String, u64>) -> String {
    let items: Vec<String> = map.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
    format!("{{{}}}", items.join(", "))
}

fn path_json(p: &Path_) -> String {
    let fuels: Vec<u64> = p.samples.iter().map(|s| s.fuel).collect();
    let t = typical(&p.samples);
    let same_calls = p.samples.iter().all(|s| s.host_calls == t.host_calls);
    format!(
        r#"{{"name": {:?}, "what": {:?}, "requests": {}, "fuel_median": {}, "fuel_min": {}, "fuel_max": {}, "fuel_by_export": {}, "host_calls": {}, "host_calls_total": {}, "host_calls_same_every_request": {}, "property_reads": {}, "guest_allocations": {}}}"#,
        p.name,
        p.what,
        p.samples.len(),
        median(fuels.clone()),
        fuels.iter().min().unwrap(),
        fuels.iter().max().unwrap(),
        json_map(&t.by_export),
        json_map(&t.host_calls),
        t.host_calls.values().sum::<u64>(),
        same_calls,
        json_map(&t.properties),
        t.allocations,
    )
}

fn print_table(paths: &[Path_]) {
    println!("\nIn-VM cost per request (release .wasm in the wasmtime proxy-wasm host, fuel = wasm instructions):\n");
    println!("| path | fuel / request | min–max | on_request_headers | host calls | which (count) | guest allocs |");
    println!("|---|---:|---:|---:|---:|---|---:|");
    for p in paths {
        let fuels: Vec<u64> = p.samples.iter().map(|s| s.fuel).collect();
        let t = typical(&p.samples);
        let headers_fuel = t
            .by_export
            .get("proxy_on_request_headers")
            .copied()
            .unwrap_or(0);
        let same = if p.samples.iter().all(|s| s.host_calls == t.host_calls) {
            ""
        } else {
            " (varies)"
        };
        println!(
            "| {} ({}) | {} | {}–{} | {} | {}{} | {} | {} |",
            p.name,
            p.what,
            median(fuels.clone()),
            fuels.iter().min().unwrap(),
            fuels.iter().max().unwrap(),
            headers_fuel,
            t.host_calls.values().sum::<u64>(),
            same,
            calls_text(&t.host_calls),
            t.allocations,
        );
    }
    println!("\nFuel by callback (typical request):");
    for p in paths {
        let t = typical(&p.samples);
        println!("  {:14} {}", p.name, calls_text(&t.by_export));
        if !t.properties.is_empty() {
            println!("  {:14} properties read: {}", "", calls_text(&t.properties));
        }
    }
}

struct Args {
    requests: usize,
    /// Where the JSON goes; by default bench/raw/wasm_cost.json, or for `--compare`
    /// bench/raw/wasm_cost_compare.json (so a comparison never replaces the full table).
    json: Option<PathBuf>,
    compare: Vec<(String, PathBuf)>,
    hostcall: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        requests: 50,
        json: None,
        compare: Vec::new(),
        hostcall: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench-hostcall/wasm32-wasip1/release/bench_hostcall_cost.wasm"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            // cargo bench passes this to every bench binary.
            "--bench" => {}
            "--requests" => {
                a.requests = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--requests N")
            }
            "--json" => a.json = Some(it.next().expect("--json PATH").into()),
            "--hostcall" => a.hostcall = it.next().expect("--hostcall PATH").into(),
            "--compare" => {
                let spec = it.next().expect("--compare LABEL=PATH");
                let (label, path) = spec.split_once('=').expect("--compare LABEL=PATH");
                a.compare.push((label.to_string(), path.into()));
            }
            other => panic!("unknown argument {other:?} (see the header of benches/wasm_cost.rs)"),
        }
    }
    a
}

fn compare(a: &Args) {
    println!("Warm external request, by build of the filter:\n");
    println!("| build | .wasm bytes | fuel / request | on_request_headers |");
    println!("|---|---:|---:|---:|");
    let mut rows = Vec::new();
    for (label, path) in &a.compare {
        let size = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len();
        let samples = warm_external(path, 5, a.requests);
        let t = typical(&samples).clone();
        let headers_fuel = t
            .by_export
            .get("proxy_on_request_headers")
            .copied()
            .unwrap_or(0);
        println!("| {label} | {size} | {} | {headers_fuel} |", t.fuel);
        rows.push(format!(
            r#"{{"label": {label:?}, "wasm": {:?}, "bytes": {size}, "fuel": {}, "fuel_on_request_headers": {headers_fuel}}}"#,
            path.display().to_string(),
            t.fuel
        ));
    }
    let json = a
        .json
        .clone()
        .unwrap_or_else(|| raw_dir().join("wasm_cost_compare.json"));
    write_json(&json, &format!("{{\"builds\": [{}]}}\n", rows.join(", ")));
}

/// The calls bench/hostcall-cost probes in Envoy that the harness implements (Envoy's
/// `clear_route_cache` foreign function is not one of them), and the replay of a warm
/// request's host calls.
const GUEST_SIDE_CALLS: [&str; 14] = [
    "header_pairs",
    "header_get",
    "header_add",
    "header_replace",
    "header_remove",
    "set_header_map_pairs",
    "property:connection.mtls",
    "property:source.address",
    "set_property",
    "shared_get",
    "shared_set",
    "metric_increment",
    "time",
    "replay_warm",
];

/// Fuel of one request through bench/hostcall-cost making `call` `n` times.
fn probe_fuel(wasm: &Path, call: &str, n: u32) -> u64 {
    let host = Host::metered_wasm(wasm);
    let mut vm = host
        .vm(&format!("{call} {n}"))
        .unwrap_or_else(|e| panic!("hostcall-cost refused `{call} {n}`: {e}"));
    for seq in 0..3 {
        probed(&mut vm, external(seq, 0));
    }
    measure(&mut vm, |vm| probed(vm, external(3, 0))).fuel
}

/// The guest's side of each host call: the SDK wrapper, and for values Envoy returns, the
/// allocation and decoding in the VM. Deterministic, like all fuel.
/// Also returns the fuel of a request through the probe with N = 0 (the SDK's own work for
/// any request: context create, callbacks, delete).
fn guest_side(wasm: &Path) -> (u64, Vec<(String, u64)>) {
    let base = probe_fuel(wasm, "none", 0);
    let rows = GUEST_SIDE_CALLS
        .iter()
        .map(|call| {
            // A replay adds its headers, so a second one would decode a longer map.
            let n = if call.starts_with("replay") { 1 } else { 8 };
            let fuel = probe_fuel(wasm, call, n);
            (
                call.to_string(),
                (fuel.saturating_sub(base) + n as u64 / 2) / n as u64,
            )
        })
        .collect();
    (base, rows)
}

fn raw_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/raw")
}

fn write_json(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the JSON's directory");
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!("\nwrote {}", path.display());
}

fn main() {
    let a = args();
    if !a.compare.is_empty() {
        compare(&a);
        return;
    }
    let (w, n) = (5, a.requests);
    let artifact = harness::artifact_path();
    let paths = vec![
        Path_ {
            name: "warm",
            what: "external, key in this worker's copy",
            samples: warm_external(&artifact, w, n),
        },
        Path_ {
            name: "shared",
            what: "external, verdict only in shared data",
            samples: shared_only(w, n),
        },
        Path_ {
            name: "miss",
            what: "external, cache miss: request + callout reply",
            samples: miss(w, n),
        },
        Path_ {
            name: "internal",
            what: "mTLS, allow-listed URI SAN, Envoy's XFCC",
            samples: internal(w, n),
        },
        Path_ {
            name: "exempt",
            what: "/health",
            samples: exempt(w, n),
        },
        Path_ {
            name: "no_key",
            what: "401, no key",
            samples: no_key(w, n),
        },
    ];
    print_table(&paths);
    let (probe_base, guest) = if a.hostcall.exists() {
        let (base, rows) = guest_side(&a.hostcall);
        println!(
            "\nGuest-side fuel per host call (bench/hostcall-cost in the harness, this request):"
        );
        for (call, fuel) in &rows {
            println!("  {call:28} {fuel}");
        }
        println!("  (a request through the probe with N = 0: {base})");
        (base, rows)
    } else {
        println!(
            "\n(no guest-side fuel per host call: {} is not built; `make cost-model-envoy` builds it)",
            a.hostcall.display()
        );
        (0, Vec::new())
    };
    let guest_json: Vec<String> = guest
        .iter()
        .map(|(call, fuel)| format!("{call:?}: {fuel}"))
        .collect();
    let size = std::fs::metadata(&artifact).map(|m| m.len()).unwrap_or(0);
    let body: Vec<String> = paths.iter().map(path_json).collect();
    let json = a
        .json
        .clone()
        .unwrap_or_else(|| raw_dir().join("wasm_cost.json"));
    write_json(
        &json,
        &format!(
            "{{\"wasm\": {:?}, \"wasm_bytes\": {size}, \"requests_per_path\": {n}, \"warmup_per_path\": {w}, \"probe_request_fuel\": {probe_base}, \"guest_fuel_per_host_call\": {{{}}}, \"paths\": [\n{}\n]}}\n",
            artifact.display().to_string(),
            guest_json.join(", "),
            body.join(",\n")
        ),
    );
}
