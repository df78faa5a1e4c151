//! Keeps the endpoint table honest against the MLflow server actually installed in `.venv`
//! (`tests/scope/mlflow_routes.py` reads its Flask and FastAPI routes):
//! - every (route, method) MLflow serves under `/api/` or `/ajax-api/` must be in the table,
//!   so an MLflow upgrade that adds an endpoint fails here instead of defaulting silently;
//! - every table entry must still be served (a stale entry is a guess about an endpoint that
//!   no longer exists), except the few kept on purpose, listed below with the reason;
//! - each served route, filled with sample values, is found by the same lookup the filter
//!   runs, under every Envoy prefix.
//!
//! OPTIONS is not listed: MLflow answers it itself for CORS, the filter lets preflights
//! through before any scope check, and any other OPTIONS is a write. HEAD is looked up as
//! GET, so a HEAD route needs its GET twin in the table.

use std::collections::{BTreeMap, BTreeSet};
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

type Key = (String, String, String); // (root, method, pattern)

fn served_routes() -> (String, BTreeMap<Key, Vec<String>>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing; run `make venv` first (or `make test`)",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("tests/scope/mlflow_routes.py"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run tests/scope/mlflow_routes.py");
    assert!(
        out.status.success(),
        "mlflow_routes.py failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("mlflow_routes.py prints JSON");
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
    }
}

fn table_keys() -> BTreeMap<Key, Access> {
    let mut keys = BTreeMap::new();
    for e in endpoint_table() {
        for root in [Root::Api, Root::Ajax] {
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
    format!("{prefix}/{root}/{}", endpoint.join("/"))
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
