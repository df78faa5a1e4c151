//! Keeps the endpoint table honest against the MLflow server actually installed in `.venv`
//! (`tests/scope/mlflow_routes.py` reads its Flask and FastAPI routes):
//! - every (route, method) MLflow serves under `/api/` or `/ajax-api/` must be in the table,
//!   so an MLflow upgrade that adds an endpoint fails here instead of defaulting silently;
//! - every table entry must still be served (a stale entry is a guess about an endpoint that
//!   no longer exists), except the few kept on purpose, listed below with the reason;
//! - each served route, filled with sample values, is found by the same lookup the filter
//!   runs, under every Envoy prefix;
//! - every other route MLflow serves (outside both API roots: the web UI's shell, files,
//!   artifact views and `/graphql`, and a few more) is either a UI entry of the table or
//!   listed below as left to the write default, so a new one fails here too;
//! - every field of the GraphQL schema `/graphql` serves, `Mutation` included, resolves to a
//!   read (`tests/scope/mlflow_graphql.py` reads it): the table lets read-only users POST
//!   there, which is right only while that holds.
//!
//! OPTIONS is not listed: MLflow answers it itself for CORS, the filter lets preflights
//! through before any scope check, and any other OPTIONS is a write. HEAD is looked up as
//! GET, so a HEAD route needs its GET twin in the table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use hokusai_auth_filter::core::request::scope::{
    endpoint_table, lookup, Access, Method, Root, ROUTE_PREFIXES,
};

/// Entries the server does not serve but the table keeps, with why.
const KEPT_UNSERVED: &[(&str, &str, &str, &str)] = &[
    (
        "api",
        "POST",
        "2.0/mlflow/experiments/get-by-name",
        "the contract names it as a POST read; MLflow 3.17 serves it as GET only (405)",
    ),
    (
        "ajax-api",
        "POST",
        "2.0/mlflow/experiments/get-by-name",
        "as above",
    ),
];

/// Routes outside the API roots that MLflow serves and the table leaves to the write
/// default, with why: none is part of the web UI a reader needs.
const UI_LEFT_AS_WRITE: &[(&str, &str, &str)] = &[
    (
        "GET",
        "health",
        "exempt in the filter's config; a write otherwise",
    ),
    (
        "GET",
        "version",
        "not used by the UI; nothing a reader needs",
    ),
    (
        "GET",
        "build/{*}",
        "Flask's own copy of the UI bundle; the UI loads static-files/",
    ),
    ("POST", "v1/traces", "OTLP trace ingest: writes traces"),
    (
        "POST",
        "gateway/anthropic/v1/messages",
        "AI gateway: invokes a model",
    ),
    (
        "POST",
        "gateway/gemini/v1beta/models/{}:generateContent",
        "AI gateway: invokes a model",
    ),
    (
        "POST",
        "gateway/gemini/v1beta/models/{}:streamGenerateContent",
        "AI gateway: invokes a model",
    ),
    (
        "POST",
        "gateway/mlflow/v1/chat/completions",
        "AI gateway: invokes a model",
    ),
    (
        "GET",
        "gateway/mlflow/v1/models",
        "AI gateway: not part of the tracking UI",
    ),
    (
        "POST",
        "gateway/openai/v1/chat/completions",
        "AI gateway: invokes a model",
    ),
    (
        "POST",
        "gateway/openai/v1/embeddings",
        "AI gateway: invokes a model",
    ),
    (
        "POST",
        "gateway/openai/v1/responses",
        "AI gateway: invokes a model",
    ),
    (
        "POST",
        "gateway/openai/v1/responses/compact",
        "AI gateway: invokes a model",
    ),
    (
        "POST",
        "gateway/proxy/{}/{*}",
        "AI gateway: invokes a model",
    ),
    (
        "POST",
        "gateway/typesafe/v1/systemone",
        "AI gateway: invokes a model",
    ),
    (
        "POST",
        "gateway/{}/mlflow/invocations",
        "AI gateway: invokes a model",
    ),
];

type Key = (String, String, String); // (root, method, pattern)

/// Runs one of the `tests/scope/*.py` readers with the venv's Python; its JSON output.
fn run_reader(script: &str) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing; run `make venv` first (or `make test`)",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("tests/scope").join(script))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("run tests/scope/{script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{script} prints JSON: {e}"))
}

fn served_routes() -> (String, BTreeMap<Key, Vec<String>>) {
    let json = run_reader("mlflow_routes.py");
    let version = json["mlflow_version"].as_str().unwrap_or("?").to_owned();
    let mut routes = BTreeMap::new();
    for r in json["routes"].as_array().expect("routes") {
        let field = |k: &str| r[k].as_str().expect(k).to_owned();
        let sources = r["sources"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        routes.insert((field("root"), field("method"), field("pattern")), sources);
    }
    (version, routes)
}

fn root_name(root: Root) -> &'static str {
    match root {
        Root::Api => "api",
        Root::Ajax => "ajax-api",
        Root::Ui => "ui",
    }
}

fn table_keys() -> BTreeMap<Key, Access> {
    let mut keys = BTreeMap::new();
    for e in endpoint_table() {
        for root in [Root::Api, Root::Ajax, Root::Ui] {
            if e.roots.includes(root) {
                let key = (
                    root_name(root).to_owned(),
                    e.method.as_str().to_owned(),
                    e.pattern.to_owned(),
                );
                keys.insert(key, e.access);
            }
        }
    }
    keys
}

/// A request path for a served pattern: each wildcard becomes a plain sample value.
fn sample_path(prefix: &str, root: &str, pattern: &str) -> String {
    let endpoint: Vec<&str> = pattern
        .split('/')
        .map(|seg| match seg {
            "{}" => "id1",
            "{*}" => "ns/item.txt",
            lit => lit,
        })
        .collect();
    match root {
        "ui" => format!("{prefix}/{}", endpoint.join("/")),
        _ => format!("{prefix}/{root}/{}", endpoint.join("/")),
    }
}

#[test]
fn the_table_classifies_exactly_what_mlflow_serves() {
    let (version, served) = served_routes();
    let table = table_keys();

    let mut expected: BTreeSet<Key> = BTreeSet::new();
    let mut problems = Vec::new();
    for ((root, method, pattern), sources) in &served {
        match method.as_str() {
            "OPTIONS" => continue,
            "HEAD" => {
                let get = (root.clone(), "GET".to_owned(), pattern.clone());
                if !served.contains_key(&get) {
                    problems.push(format!(
                        "HEAD without GET, cannot be classified: /{root}/{pattern} ({sources:?})"
                    ));
                }
                continue;
            }
            m if Method::parse(m).is_none() => {
                problems.push(format!(
                    "method the table cannot express: {m} /{root}/{pattern} ({sources:?})"
                ));
                continue;
            }
            _ => {}
        }
        let key = (root.clone(), method.clone(), pattern.clone());
        let left_as_write = root == "ui"
            && UI_LEFT_AS_WRITE
                .iter()
                .any(|(m, p, _)| m == method && p == pattern);
        if left_as_write {
            for prefix in ROUTE_PREFIXES {
                let path = sample_path(prefix, root, pattern);
                if lookup(method, &path).is_some() {
                    problems.push(format!(
                        "left as write, but the table knows {method} {path}"
                    ));
                }
            }
            if table.contains_key(&key) {
                problems.push(format!(
                    "{key:?} is in the table: drop it from UI_LEFT_AS_WRITE"
                ));
            }
            expected.insert(key);
            continue;
        }
        if !table.contains_key(&key) {
            problems.push(format!(
                "not in the table: {method} /{root}/{pattern} ({})",
                sources.join(", ")
            ));
        }
        // The lookup the filter runs must find it, under every prefix Envoy forwards.
        for prefix in ROUTE_PREFIXES {
            let path = sample_path(prefix, root, pattern);
            if lookup(method, &path).is_none() {
                problems.push(format!("lookup misses {method} {path}"));
            }
        }
        expected.insert(key);
    }

    let kept: BTreeSet<Key> = KEPT_UNSERVED
        .iter()
        .map(|(r, m, p, _)| (r.to_string(), m.to_string(), p.to_string()))
        .collect();
    for key in table.keys() {
        if !expected.contains(key) && !kept.contains(key) {
            let (root, method, pattern) = key;
            problems.push(format!(
                "stale: the table lists {method} /{root}/{pattern}, which MLflow does not serve"
            ));
        }
    }
    for (method, pattern, _) in UI_LEFT_AS_WRITE {
        let key = ("ui".to_owned(), method.to_string(), pattern.to_string());
        if !served.contains_key(&key) {
            problems.push(format!(
                "stale: UI_LEFT_AS_WRITE lists {method} /{pattern}, which MLflow does not serve"
            ));
        }
    }
    for key in &kept {
        if expected.contains(key) {
            problems.push(format!("{key:?} is served now: drop it from KEPT_UNSERVED"));
        }
    }

    assert!(
        problems.is_empty(),
        "endpoint table vs MLflow {version} ({} served routes):\n  {}\n\
         Classify each new endpoint in src/core/request/scope/endpoints.rs (read only if it changes nothing).",
        expected.len(),
        problems.join("\n  ")
    );
    eprintln!(
        "scope_routes: {} (route, method) pairs of MLflow {version} all classified",
        expected.len()
    );
}

/// Calls a resolver may make besides its one handler: building the request, checking a float.
const HARMLESS_CALLS: &[&str] = &["vars", "parse_dict", "math.isnan"];

/// `SearchRuns` → `search_runs`: how MLflow names the handler for a request message.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Why a field is a read, or `Err` with why it cannot be shown to be one.
fn judge_field(field: &serde_json::Value) -> Result<String, String> {
    let strings = |key: &str| -> Vec<String> {
        field[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    match field["kind"].as_str() {
        Some("default") => return Ok("reads an attribute of its parent".into()),
        Some("custom") => {}
        _ => return Err(format!("resolved by something unknown: {}", field["what"])),
    }
    let resolver = field["resolver"].as_str().unwrap_or("?");
    let other: Vec<String> = strings("other_calls")
        .into_iter()
        .filter(|c| !HARMLESS_CALLS.contains(&c.as_str()))
        .collect();
    if !other.is_empty() {
        return Err(format!(
            "{resolver} calls {other:?}, which this check cannot judge"
        ));
    }
    let handlers = strings("handler_calls");
    let messages = field["messages"].as_array().cloned().unwrap_or_default();
    match (handlers.as_slice(), messages.as_slice()) {
        ([], []) => Ok(format!("{resolver} computes from its arguments alone")),
        ([handler], [message]) => {
            let name = message["name"].as_str().unwrap_or_default();
            if *handler != format!("{}_impl", snake_case(name)) {
                return Err(format!("{resolver} builds {name} but calls {handler}"));
            }
            let endpoints = message["endpoints"].as_array().cloned().unwrap_or_default();
            let mut reads = 0;
            let mut why = String::new();
            for e in &endpoints {
                let (method, pattern) = (e[0].as_str().unwrap_or(""), e[1].as_str().unwrap_or(""));
                for root in ["/api/", "/ajax-api/"] {
                    let path = format!("{root}{pattern}");
                    match lookup(method, &path) {
                        Some(Access::Read) => {
                            reads += 1;
                            let _ = write!(why, "{method} {path} reads; ");
                        }
                        Some(Access::Write) => {
                            return Err(format!(
                                "{resolver} runs {handler}, whose endpoint {method} {path} is a write"
                            ))
                        }
                        None => {}
                    }
                }
            }
            if reads == 0 {
                return Err(format!(
                    "{resolver} runs {handler}, and no endpoint of {name} ({endpoints:?}) is a read in the table"
                ));
            }
            Ok(format!("{resolver} runs {handler}: {why}"))
        }
        _ => Err(format!(
            "{resolver} calls handlers {handlers:?} with messages {messages:?}: one of each is what this check can judge"
        )),
    }
}

#[test]
fn every_graphql_field_mlflow_serves_is_a_read() {
    let json = run_reader("mlflow_graphql.py");
    let version = json["mlflow_version"].as_str().unwrap_or("?");
    let fields = json["fields"].as_array().expect("fields");
    let mut problems = Vec::new();
    if !json["roots"]["subscription"].is_null() {
        problems.push(format!(
            "the schema has a subscription type ({}): judge it before it is served as a read",
            json["roots"]["subscription"]
        ));
    }
    let mut per_root: BTreeMap<String, usize> = BTreeMap::new();
    for field in fields {
        let name = format!(
            "{}.{}",
            field["type"].as_str().unwrap_or("?"),
            field["field"].as_str().unwrap_or("?")
        );
        for root in ["query", "mutation"] {
            if field["type"] == json["roots"][root] {
                *per_root.entry(root.to_owned()).or_default() += 1;
            }
        }
        if let Err(why) = judge_field(field) {
            problems.push(format!("{name}: {why}"));
        }
    }
    // The walk must have seen both root types, or it proves nothing about them.
    for root in ["query", "mutation"] {
        if per_root.get(root).copied().unwrap_or(0) == 0 {
            problems.push(format!("no field of the {root} type was read"));
        }
    }
    assert!(
        problems.is_empty(),
        "GraphQL schema of MLflow {version}: fields that are not shown to be reads, so \
         `/graphql` must not stay a read (src/core/scope/endpoints.rs):\n  {}",
        problems.join("\n  ")
    );
    eprintln!(
        "scope_routes: {} GraphQL fields of MLflow {version} ({per_root:?} on the root types) all read",
        fields.len()
    );
}

#[test]
fn the_graphql_judge_refuses_what_it_cannot_prove() {
    use serde_json::json;
    let field = |handler: &str, message: &str, endpoints: serde_json::Value, other: &[&str]| {
        json!({
            "kind": "custom", "resolver": "m.R.resolve_x",
            "handler_calls": [handler],
            "messages": [{"name": message, "endpoints": endpoints}],
            "other_calls": other,
        })
    };
    // As MLflow 3.17 has them: reads.
    assert!(judge_field(&field(
        "search_runs_impl",
        "SearchRuns",
        json!([["POST", "2.0/mlflow/runs/search"]]),
        &["vars", "parse_dict"]
    ))
    .is_ok());
    assert!(judge_field(&json!({"kind": "default"})).is_ok());
    // A field MLflow might add: a mutation that deletes, one that writes through an
    // unknown endpoint, one whose handler does not match its message, one that calls
    // something else, one with two handlers, and a resolver of an unknown kind.
    for (label, bad) in [
        (
            "delete",
            field(
                "delete_run_impl",
                "DeleteRun",
                json!([["POST", "2.0/mlflow/runs/delete"]]),
                &[],
            ),
        ),
        (
            "unknown endpoint",
            field(
                "rename_things_impl",
                "RenameThings",
                json!([["POST", "2.0/mlflow/things/rename"]]),
                &[],
            ),
        ),
        (
            "mismatch",
            field(
                "delete_run_impl",
                "SearchRuns",
                json!([["POST", "2.0/mlflow/runs/search"]]),
                &[],
            ),
        ),
        (
            "other call",
            field(
                "search_runs_impl",
                "SearchRuns",
                json!([["POST", "2.0/mlflow/runs/search"]]),
                &["_get_tracking_store"],
            ),
        ),
        (
            "two handlers",
            json!({"kind": "custom", "resolver": "r", "handler_calls": ["a_impl", "b_impl"], "messages": [], "other_calls": []}),
        ),
        (
            "unknown kind",
            json!({"kind": "unknown", "what": "<lambda>"}),
        ),
    ] {
        assert!(judge_field(&bad).is_err(), "{label}: {bad}");
    }
}
