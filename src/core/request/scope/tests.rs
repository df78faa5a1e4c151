use std::collections::HashSet;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::Access::*;
use super::*;

fn check(cases: &[(&str, &str, Access)]) {
    for &(method, path, want) in cases {
        assert_eq!(required_access(method, path), want, "{method} {path}");
    }
}

/// Every way Envoy forwards an API path to MLflow, for `path` under `/api/`.
fn prefixed(path: &str) -> [String; 3] {
    ROUTE_PREFIXES.map(|prefix| format!("{prefix}{path}"))
}

#[test]
fn tracking_reads_and_writes() {
    check(&[
        ("POST", "/api/2.0/mlflow/runs/search", Read),
        ("POST", "/api/2.0/mlflow/experiments/search", Read),
        (
            "GET",
            "/api/2.0/mlflow/experiments/search?max_results=5",
            Read,
        ),
        ("POST", "/api/2.0/mlflow/experiments/get-by-name", Read),
        (
            "GET",
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name=x",
            Read,
        ),
        (
            "GET",
            "/api/2.0/mlflow/experiments/get?experiment_id=1",
            Read,
        ),
        ("GET", "/api/2.0/mlflow/runs/get?run_id=x", Read),
        ("GET", "/api/2.0/mlflow/metrics/get-history?run_id=x", Read),
        (
            "POST",
            "/api/2.0/mlflow/registered-models/get-latest-versions",
            Read,
        ),
        (
            "GET",
            "/api/2.0/mlflow/registered-models/alias?name=m&alias=a",
            Read,
        ),
        ("GET", "/api/2.0/mlflow/artifacts/list?run_id=x", Read),
        (
            "POST",
            "/api/2.0/mlflow/artifacts/presigned-download-url",
            Read,
        ),
        ("POST", "/api/2.0/mlflow/logged-models/search", Read),
        ("GET", "/api/2.0/mlflow/logged-models/m-123", Read),
        ("POST", "/api/2.0/mlflow/runs/create", Write),
        ("POST", "/api/2.0/mlflow/runs/log-metric", Write),
        ("POST", "/api/2.0/mlflow/runs/log-batch", Write),
        ("POST", "/api/2.0/mlflow/runs/update", Write),
        ("POST", "/api/2.0/mlflow/experiments/create", Write),
        ("POST", "/api/2.0/mlflow/registered-models/alias", Write),
        ("DELETE", "/api/2.0/mlflow/registered-models/alias", Write),
        ("DELETE", "/api/2.0/mlflow/model-versions/delete", Write),
        (
            "POST",
            "/api/2.0/mlflow/artifacts/presigned-upload-url",
            Write,
        ),
        ("PATCH", "/api/2.0/mlflow/logged-models/m-123", Write),
        (
            "DELETE",
            "/api/2.0/mlflow/logged-models/m-123/tags/get_key",
            Write,
        ),
        ("PATCH", "/api/2.0/mlflow/runs/update", Write),
        ("POST", "/api/2.0/mlflow/unheard-of/endpoint", Write),
        ("GET", "/api/2.0/mlflow/unheard-of/endpoint", Write),
    ]);
}

#[test]
fn traces_and_genai_reads_and_writes() {
    check(&[
        ("POST", "/api/3.0/mlflow/traces/search", Read),
        ("POST", "/api/3.0/mlflow/traces/batchGetInfos", Read),
        ("POST", "/api/3.0/mlflow/traces/metrics", Read),
        (
            "POST",
            "/api/3.0/mlflow/traces/calculate-filter-correlation",
            Read,
        ),
        ("GET", "/api/3.0/mlflow/traces/tr-1", Read),
        ("GET", "/api/3.0/mlflow/traces/tr-1/assessments/a-1", Read),
        ("POST", "/api/3.0/mlflow/traces", Write),
        ("PATCH", "/api/3.0/mlflow/traces/tr-1/tags", Write),
        ("DELETE", "/api/3.0/mlflow/traces/search/tags", Write),
        ("POST", "/api/3.0/mlflow/traces/tr-1/assessments", Write),
        ("POST", "/api/3.0/mlflow/datasets/search", Read),
        ("POST", "/api/3.0/mlflow/datasets/d-1/records", Write),
        ("DELETE", "/api/3.0/mlflow/datasets/search", Write),
        ("POST", "/api/3.0/mlflow/issues/search", Read),
        ("PATCH", "/api/3.0/mlflow/issues/get-1", Write),
        (
            "POST",
            "/api/3.0/mlflow/prompt-optimization/jobs/search",
            Read,
        ),
        (
            "POST",
            "/api/3.0/mlflow/prompt-optimization/jobs/j-1/cancel",
            Write,
        ),
        ("GET", "/api/3.0/mlflow/scorers/list?experiment_id=1", Read),
        ("PUT", "/api/3.0/mlflow/scorers/online-config", Write),
        // Named like a read, creates a queue.
        (
            "POST",
            "/api/3.0/mlflow/review-queues/get-or-create-user",
            Write,
        ),
        ("GET", "/api/3.0/mlflow/review-queues/items/list", Read),
    ]);
}

#[test]
fn gateway_mcp_workspaces_and_ui_routes() {
    check(&[
        ("GET", "/api/3.0/mlflow/gateway/endpoints/list", Read),
        ("POST", "/api/3.0/mlflow/gateway/endpoints/create", Write),
        (
            "GET",
            "/api/3.0/mlflow/gateway/secrets/get?secret_id=s",
            Read,
        ),
        ("GET", "/api/3.0/mlflow/gateway/guardrails/list", Write),
        (
            "GET",
            "/api/3.0/mlflow/gateway/guardrails/list-for-endpoint",
            Read,
        ),
        ("GET", "/api/2.0/mlflow/webhooks", Write),
        (
            "GET",
            "/ajax-api/2.0/mlflow/gateway-proxy?gateway_path=api/2.0/endpoints",
            Read,
        ),
        ("POST", "/ajax-api/2.0/mlflow/gateway-proxy", Write),
        ("GET", "/api/3.0/mlflow/mcp-servers/ns/slug", Read),
        (
            "GET",
            "/api/3.0/mlflow/mcp-servers/ns/slug/versions/1/tags",
            Read,
        ),
        ("PATCH", "/api/3.0/mlflow/mcp-servers/ns/getter", Write),
        (
            "DELETE",
            "/api/3.0/mlflow/mcp-servers/ns/slug/versions/1/tags/search",
            Write,
        ),
        (
            "POST",
            "/api/3.0/mlflow/mcp-servers/ns/slug/versions",
            Write,
        ),
        ("POST", "/api/3.0/mlflow/mcp-servers/ns/get", Write),
        ("GET", "/api/3.0/mlflow/workspaces", Read),
        ("DELETE", "/api/3.0/mlflow/workspaces/listing", Write),
        ("GET", "/api/3.0/mlflow/server-info", Read),
        ("GET", "/ajax-api/3.0/mlflow/assistant/config", Read),
        (
            "GET",
            "/ajax-api/3.0/mlflow/assistant/sessions/s-1/stream",
            Write,
        ),
        ("POST", "/ajax-api/3.0/mlflow/assistant/message", Write),
        ("POST", "/ajax-api/3.0/jobs/search", Read),
        ("GET", "/ajax-api/3.0/jobs/j-1", Read),
        ("POST", "/ajax-api/3.0/jobs/", Write),
        ("PATCH", "/ajax-api/3.0/jobs/cancel/j-1", Write),
        ("POST", "/ajax-api/3.0/mlflow/ui-telemetry", Write),
    ]);
}

#[test]
fn both_roots_and_every_envoy_prefix() {
    for (method, endpoint, want) in [
        ("POST", "2.0/mlflow/runs/search", Read),
        ("POST", "2.0/mlflow/runs/log-metric", Write),
        ("GET", "3.0/mlflow/traces/tr-1", Read),
        (
            "PUT",
            "2.0/mlflow-artifacts/artifacts/0/r/artifacts/get_model.pkl",
            Write,
        ),
        (
            "GET",
            "2.0/mlflow-artifacts/artifacts/0/r/artifacts/get_model.pkl",
            Read,
        ),
    ] {
        for root in ["/api/", "/ajax-api/"] {
            for path in prefixed(&format!("{root}{endpoint}")) {
                assert_eq!(required_access(method, &path), want, "{method} {path}");
            }
        }
    }
}

#[test]
fn ajax_only_routes_are_unknown_under_api() {
    check(&[
        (
            "POST",
            "/ajax-api/2.0/mlflow/experiments/search-datasets",
            Read,
        ),
        ("POST", "/api/2.0/mlflow/experiments/search-datasets", Write),
        ("GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk", Read),
        ("GET", "/api/2.0/mlflow/metrics/get-history-bulk", Write),
        ("POST", "/api/3.0/jobs/search", Write),
    ]);
}

const HOSTILE_NAMES: [&str; 4] = [
    "get_model.pkl",
    "listing.csv",
    "search_results.txt",
    "download.bin",
];

#[test]
fn artifact_names_never_decide() {
    for name in HOSTILE_NAMES {
        for base in [
            "/api/2.0/mlflow-artifacts/artifacts/0/run1/artifacts",
            "/ajax-api/2.0/mlflow-artifacts/artifacts/0/run1/artifacts",
            "/api/2.0/mlflow-artifacts/mpu/create/0/run1/artifacts",
            "/api/2.0/mlflow-artifacts/mpu/complete/0/run1/artifacts",
            "/api/2.0/mlflow-artifacts/mpu/abort/0/run1/artifacts",
        ] {
            for path in prefixed(&format!("{base}/{name}")) {
                for method in ["PUT", "DELETE", "POST", "PATCH", "OPTIONS", "put"] {
                    assert_eq!(required_access(method, &path), Write, "{method} {path}");
                }
            }
        }
        for path in prefixed(&format!(
            "/api/2.0/mlflow-artifacts/artifacts/0/run1/artifacts/{name}"
        )) {
            assert_eq!(required_access("GET", &path), Read, "GET {path}");
            assert_eq!(required_access("HEAD", &path), Read, "HEAD {path}");
        }
    }
    check(&[
        (
            "GET",
            "/api/2.0/mlflow-artifacts/artifacts?path=0/run1/artifacts",
            Read,
        ),
        (
            "GET",
            "/api/2.0/mlflow-artifacts/presigned/0/run1/artifacts/x",
            Read,
        ),
        (
            "POST",
            "/api/2.0/mlflow-artifacts/artifacts/0/run1/artifacts/x",
            Write,
        ),
        (
            "GET",
            "/api/2.0/mlflow-artifacts/mpu/create/0/run1/artifacts/x",
            Write,
        ),
        // Names that were reads by the old name heuristic stay writes off the artifact API.
        ("POST", "/api/2.0/mlflow/artifacts/list", Write),
        (
            "POST",
            "/ajax-api/2.0/mlflow/upload-artifact?path=get_model.pkl",
            Write,
        ),
    ]);
}

#[test]
fn the_whole_path_after_a_known_prefix_decides() {
    check(&[
        // No substring search: a marker further in means nothing.
        ("POST", "/not-mlflow/api/2.0/mlflow/runs/search", Write),
        ("POST", "/x/2.0/mlflow/runs/search", Write),
        (
            "POST",
            "/api/mlflow/api/mlflow/api/2.0/mlflow/runs/search",
            Write,
        ),
        ("POST", "/api/2.0/mlflow/runs/search/more", Write),
        ("POST", "/api/2.0/mlflow/runs/search/", Write),
        ("POST", "/api/2.0/mlflow/runs/create/search", Write),
        ("POST", "/api/2.0/mlflow/runs//search", Write),
        ("POST", "/api/2.0/mlflow/experiments/search-not", Write),
        // Query and fragment are not part of the endpoint.
        ("POST", "/api/2.0/mlflow/runs/search?x=/get", Read),
        (
            "POST",
            "/api/2.0/mlflow/runs/create?endpoint=runs/search",
            Write,
        ),
        ("POST", "/api/2.0/mlflow/runs/create#/search", Write),
        // Nothing is decoded or case-folded: unknown spellings are writes.
        ("POST", "/api/2.0/mlflow/runs/%73earch", Write),
        ("POST", "/api/2.0/mlflow/runs/Search", Write),
        ("POST", "/API/2.0/mlflow/runs/search", Write),
        ("GET", "/Api/2.0/mlflow/runs/get", Write),
        // Paths outside the API and the UI's routes, even GETs.
        ("GET", "/mlflow/version", Write),
        ("GET", "/mlflow/index.html", Write),
        ("GET", "/mlflow", Write),
        ("GET", "", Write),
    ]);
}

#[test]
fn the_web_ui_reads_under_every_prefix() {
    for prefix in ROUTE_PREFIXES {
        for (method, rest, want) in [
            // The shell, its files, artifact views and GraphQL: reads.
            ("GET", "/", Read),
            ("HEAD", "/", Read),
            ("GET", "/?x=/api/2.0/mlflow/runs/delete", Read),
            ("GET", "/static-files/static/js/main.c2f5f8d4.js", Read),
            ("GET", "/static-files/favicon.ico", Read),
            ("GET", "/get-artifact?path=notes.txt&run_uuid=r1", Read),
            (
                "GET",
                "/model-versions/get-artifact?path=MLmodel&name=m&version=1",
                Read,
            ),
            ("GET", "/graphql?query=%7Btest%7D", Read),
            ("POST", "/graphql", Read),
            ("POST", "/graphql?operationName=MlflowDeleteRun", Read),
            // The same routes with another method: writes.
            ("POST", "/", Write),
            ("PUT", "/static-files/static/js/main.js", Write),
            ("DELETE", "/static-files/favicon.ico", Write),
            ("POST", "/get-artifact", Write),
            ("DELETE", "/get-artifact", Write),
            ("POST", "/model-versions/get-artifact", Write),
            ("PUT", "/graphql", Write),
            ("PATCH", "/graphql", Write),
            ("DELETE", "/graphql", Write),
            ("OPTIONS", "/graphql", Write),
            ("post", "/graphql", Write),
            // Only the whole path counts: no prefix, suffix or spelling of a UI route reads.
            ("POST", "/graphql/", Write),
            ("POST", "/graphql/x", Write),
            ("POST", "/graphqlx", Write),
            ("POST", "/GraphQL", Write),
            ("POST", "/%67raphql", Write),
            ("POST", "/x/graphql", Write),
            ("POST", "/api/graphql", Write),
            ("POST", "/ajax-api/graphql", Write),
            ("GET", "/get-artifact/x", Write),
            ("GET", "/get-artifacts", Write),
            ("GET", "/model-versions/get-artifact/x", Write),
            ("GET", "/static-files", Write),
            ("GET", "/index.html", Write),
            // A UI route in front of an API write is still the API write (Envoy also
            // resolves dot segments before the filter sees the path).
            ("POST", "/static-files/../api/2.0/mlflow/runs/delete", Write),
            (
                "POST",
                "/static-files/a/../../ajax-api/2.0/mlflow/experiments/delete",
                Write,
            ),
            ("POST", "/graphql/../api/2.0/mlflow/runs/create", Write),
        ] {
            let path = format!("{prefix}{rest}");
            assert_eq!(required_access(method, &path), want, "{method} {path}");
        }
    }
    // Only the prefixes Envoy forwards, and only once.
    check(&[
        ("POST", "/other/graphql", Write),
        ("POST", "/mlflowx/graphql", Write),
        ("POST", "/mlflow/mlflow/graphql", Write),
        ("POST", "/api/mlflow/api/mlflow/graphql", Write),
        ("POST", "/mlflow/api/mlflow/graphql", Write),
        ("GET", "/mlflow/api/mlflow/", Write),
        ("GET", "/api/", Write),
        ("GET", "/ajax-api/", Write),
    ]);
}

#[test]
fn methods_are_exact_and_head_follows_get() {
    check(&[
        ("HEAD", "/api/2.0/mlflow/runs/get", Read),
        ("get", "/api/2.0/mlflow/runs/get", Write),
        ("Post", "/api/2.0/mlflow/runs/search", Write),
        ("OPTIONS", "/api/2.0/mlflow/runs/search", Write),
        ("TRACE", "/api/2.0/mlflow/runs/get", Write),
        ("GET", "/api/2.0/mlflow/runs/search", Write),
        ("PUT", "/api/2.0/mlflow/runs/get", Write),
        ("HEAD", "/api/2.0/mlflow/runs/log-metric", Write),
        ("", "/api/2.0/mlflow/runs/get", Write),
    ]);
}

#[test]
fn overly_long_paths_are_writes() {
    let deep = "a/".repeat(MAX_PATH);
    let path = format!("/api/2.0/mlflow-artifacts/artifacts/{deep}x");
    assert_eq!(required_access("GET", &path), Write);
    let fits_path = format!("/api/2.0/mlflow-artifacts/artifacts/{}", "a/".repeat(100));
    assert_eq!(required_access("GET", &fits_path), Read);
}

#[test]
fn crafted_deep_paths_cost_little_and_err_toward_write() {
    // Each of these makes the `{*}/versions/{*}/...` patterns backtrack at every segment.
    let deep = "versions/".repeat(400);
    let read = format!("/api/3.0/mlflow/mcp-servers/{deep}x");
    let write = Endpoint::new(
        Roots::Both,
        Method::Delete,
        "m/{*}/versions/{*}/tags/{*}",
        Write,
    );
    let read_entry = Endpoint::new(
        Roots::Both,
        Method::Get,
        "m/{*}/versions/{*}/tags/{*}",
        Read,
    );
    let path = format!("m/{deep}x");
    assert!(
        write.fits(&path),
        "over budget: a write entry is taken to fit"
    );
    assert!(!read_entry.fits(&path), "over budget: a read entry is not");
    assert_eq!(required_access("DELETE", &read), Write);
    // A name that spans a few segments is well within budget.
    assert!(read_entry.fits("m/ns/slug/versions/1/tags/k"));
    assert!(!read_entry.fits("m/ns/slug/versions/1/tag/k"));
}

#[test]
fn wildcards_match_segments() {
    let one = Endpoint::new(Roots::Both, Method::Get, "a/{}/c", Read);
    assert!(one.fits("a/b/c"));
    assert!(one.fits("a//c"));
    assert!(!one.fits("a/b/b/c"));
    assert!(!one.fits("a/c"));
    assert!(!one.fits("a/b/c/"));
    let many = Endpoint::new(Roots::Both, Method::Get, "a/{*}/v/{*}/t", Read);
    assert!(many.fits("a/x/v/y/t"));
    assert!(many.fits("a/x/y/v/v/v/z/t"));
    assert!(many.fits("a/v/v/v/t"));
    assert!(!many.fits("a/v/t"));
    assert!(!many.fits("a/x/v/y/t/u"));
    let tail = Endpoint::new(Roots::Both, Method::Get, "a/{*}", Read);
    assert!(tail.fits("a/"));
    assert!(tail.fits("a/b/c/d"));
    assert!(!tail.fits("a"));
    assert!(!tail.fits("ab/c"));
    let literal = Endpoint::new(Roots::Both, Method::Get, "3.0/jobs/", Read);
    assert!(literal.fits("3.0/jobs/"));
    assert!(!literal.fits("3.0/jobs"));
}

#[test]
fn the_table_is_consistent() {
    let mut seen = HashSet::new();
    for e in endpoint_table() {
        assert!(
            seen.insert((e.method, e.pattern)),
            "duplicate entry {} {}",
            e.method.as_str(),
            e.pattern
        );
        let wild = e.pattern.contains('{');
        if e.pattern.starts_with(ARTIFACTS) && e.method != Method::Get {
            assert_eq!(e.access, Write, "{} {}", e.method.as_str(), e.pattern);
        }
        // The module docs' argument against encoded paths rests on this.
        if e.access == Read && e.method != Method::Get {
            assert!(!wild, "a non-GET read with a wildcard: {}", e.pattern);
        }
        assert!(e.pattern.is_ascii(), "{}", e.pattern);
        if wild {
            let lit = e.pattern.find('{').unwrap();
            assert!(lit == 0 || e.pattern[..lit].ends_with('/'), "{}", e.pattern);
        }
        for seg in e.pattern.split('/') {
            assert!(
                !seg.contains(['{', '}']) || seg == "{}" || seg == "{*}",
                "bad wildcard in {}",
                e.pattern
            );
        }
    }
}

#[test]
fn a_literal_match_is_never_overruled() {
    // classify's fast path trusts this: for every literal entry, under every root it is
    // served on, the full scan over the table agrees with the entry alone.
    let mut checked = 0;
    for e in endpoint_table().iter().filter(|e| !e.has_wildcard()) {
        for root in ROOTS {
            if e.roots.includes(root) {
                assert_eq!(
                    classify_by_scan(root, e.method, e.pattern),
                    classify(root, e.method, e.pattern),
                    "{} {}{}",
                    e.method.as_str(),
                    root.as_str(),
                    e.pattern
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "{checked}");
}

#[test]
fn the_lookup_index_holds_the_whole_table_in_order() {
    assert_eq!(INDEX.len(), endpoint_table().len());
    for pair in INDEX.windows(2) {
        let key = |e: &Endpoint| (rank(e), e.pattern);
        assert!(key(&pair[0]) < key(&pair[1]), "{:?} {:?}", pair[0], pair[1]);
    }
    for e in endpoint_table() {
        assert!(INDEX.contains(e), "{e:?} missing from the index");
    }
}

#[test]
fn every_entry_is_found_under_its_roots_only() {
    for e in endpoint_table() {
        let sample = instantiate(e.pattern, &mut ["x1".to_string()].iter().cycle().cloned());
        for root in ROOTS {
            let path = format!("{}{sample}", root.as_str());
            let got = lookup(e.method.as_str(), &path);
            if e.roots.includes(root) {
                assert!(got.is_some(), "{} {path} not found", e.method.as_str());
                if e.access == Write {
                    assert_eq!(got, Some(Write), "{} {path}", e.method.as_str());
                }
            } else {
                let served_elsewhere = endpoint_table()
                    .iter()
                    .any(|o| o.method == e.method && o.roots.includes(root) && o.fits(&sample));
                assert!(
                    got.is_none() || served_elsewhere,
                    "{} {path} should be unknown",
                    e.method.as_str()
                );
            }
        }
    }
}

/// Fills a pattern's wildcards: `{}` with one value, `{*}` with one to three joined by `/`.
fn instantiate(pattern: &str, values: &mut dyn Iterator<Item = String>) -> String {
    let mut out = Vec::new();
    for seg in pattern.split('/') {
        match seg {
            "{}" => out.push(values.next().unwrap_or_default()),
            "{*}" => {
                let first = values.next().unwrap_or_default();
                let extra = first.len() % 3;
                let mut span = vec![first];
                span.extend((0..extra).filter_map(|_| values.next()));
                out.push(span.join("/"));
            }
            lit => out.push(lit.to_string()),
        }
    }
    out.join("/")
}

/// A segment a caller might choose: read-sounding words, file names, dots, escapes.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        prop::sample::select(vec![
            "get",
            "list",
            "search",
            "download",
            "get_model.pkl",
            "listing.csv",
            "search_results.txt",
            "download.bin",
            "..",
            ".",
            "%2F",
            "%2e%2e",
            "2.0",
            "mlflow",
            "api",
            "ajax-api",
            "mlflow-artifacts",
            "artifacts",
            "runs",
            "create",
            "tags",
            "versions",
            "{}",
            "{*}",
        ])
        .prop_map(str::to_string),
        "[A-Za-z0-9._~%:@!$&'()*+,;=-]{1,12}",
        "\\PC{1,6}".prop_map(|s| s.replace(['/', '?', '#'], "_")),
    ]
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[?#][ -~]{0,30}",
        Just("?path=/api/2.0/mlflow/runs/search".to_string()),
    ]
}

fn entry() -> impl Strategy<Value = Endpoint> {
    prop::sample::select(endpoint_table())
}

/// A request built from a table entry: an Envoy prefix, a root it is served under, its
/// wildcards filled by the caller.
fn request_for(e: Endpoint) -> impl Strategy<Value = (String, String)> {
    let roots: Vec<Root> = ROOTS.into_iter().filter(|r| e.roots.includes(*r)).collect();
    (
        prop::sample::select(ROUTE_PREFIXES.to_vec()),
        prop::sample::select(roots),
        prop::collection::vec(segment(), 12),
        query(),
    )
        .prop_map(move |(prefix, root, values, query)| {
            let endpoint = instantiate(e.pattern, &mut values.into_iter());
            (
                prefix.to_string(),
                format!("{}{endpoint}{query}", root.as_str()),
            )
        })
}

fn written_request() -> impl Strategy<Value = (String, String)> {
    entry()
        .prop_filter("a write", |e| e.access == Write)
        .prop_flat_map(|e| {
            request_for(e)
                .prop_map(move |(prefix, rest)| (e.method.as_str().into(), prefix + &rest))
        })
}

/// Same request with one bit of noise a caller might add; `at` picks where.
fn noisy(path: &str, choice: usize, at: usize, seg: &str) -> String {
    let (base, query) = path.split_at(path.find(['?', '#']).unwrap_or(path.len()));
    let pick = |spots: Vec<usize>| spots.get(at % spots.len().max(1)).copied();
    match choice % 6 {
        0 => format!("{base}/{seg}{query}"),
        1 => format!("/{seg}{base}{query}"),
        2 => format!("{base}/{query}"),
        3 => {
            let letters = base.char_indices().filter(|(_, c)| c.is_ascii_alphabetic());
            let Some(i) = pick(letters.map(|(i, _)| i).collect()) else {
                return path.to_string();
            };
            let mut out = base.to_string();
            let flipped = match out.as_bytes()[i] {
                b if b.is_ascii_lowercase() => out[i..=i].to_ascii_uppercase(),
                _ => out[i..=i].to_ascii_lowercase(),
            };
            out.replace_range(i..=i, &flipped);
            format!("{out}{query}")
        }
        4 => format!("{base}?{seg}#{seg}{query}"),
        _ => {
            // An extra segment after any slash of the path.
            let slashes = base.match_indices('/').map(|(i, _)| i);
            let i = pick(slashes.collect()).unwrap_or(0);
            format!("{}/{seg}{}{query}", &base[..i], &base[i..])
        }
    }
}

/// Every literal segment the table and the prefixes use: renaming into one of them may
/// reach another endpoint, which is not noise.
fn table_words() -> &'static HashSet<&'static str> {
    static WORDS: OnceLock<HashSet<&'static str>> = OnceLock::new();
    WORDS.get_or_init(|| {
        endpoint_table()
            .iter()
            .flat_map(|e| e.pattern.split('/'))
            .chain(["api", "ajax-api", "mlflow", ""])
            .collect()
    })
}

fn noise_segment() -> impl Strategy<Value = String> {
    segment().prop_filter("not a table word", |s| !table_words().contains(s.as_str()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Caller-chosen path parameters never decide: a write entry filled with anything
    /// (read-sounding names, extra segments, escapes), under any prefix, is a write; a
    /// read entry stays a read.
    #[test]
    fn wildcard_content_never_decides(
        (e, (prefix, rest)) in entry().prop_flat_map(|e| (Just(e), request_for(e)))
    ) {
        let path = format!("{prefix}{rest}");
        prop_assert_eq!(required_access(e.method.as_str(), &path), e.access, "{} {}", e.method.as_str(), path);
        if e.method == Method::Get {
            prop_assert_eq!(required_access("HEAD", &path), e.access, "HEAD {}", path);
        }
    }

    /// Appending, prefixing or inserting an unknown segment, a trailing slash, a query
    /// string or a changed letter never turns a write into a read.
    #[test]
    fn noise_never_turns_a_write_into_a_read(
        (method, path) in written_request(),
        choice in 0usize..6,
        at in any::<usize>(),
        seg in noise_segment(),
    ) {
        let changed = noisy(&path, choice, at, &seg);
        prop_assert_eq!(required_access(&method, &changed), Write, "{} {} (from {})", method, changed, path);
    }

    /// On the artifact API any method but GET/HEAD is a write, whatever the path says.
    #[test]
    fn artifact_api_reads_only_by_get(
        method in prop_oneof![
            prop::sample::select(vec!["PUT", "POST", "DELETE", "PATCH", "OPTIONS", "get", "head"]).prop_map(str::to_string),
            "[A-Za-z]{1,8}",
        ],
        prefix in prop::sample::select(ROUTE_PREFIXES.to_vec()),
        root in prop::sample::select(vec!["/api/", "/ajax-api/"]),
        segs in prop::collection::vec(segment(), 0..6),
        query in query(),
    ) {
        prop_assume!(method != "GET" && method != "HEAD");
        let path = format!("{prefix}{root}2.0/mlflow-artifacts/{}{query}", segs.join("/"));
        prop_assert_eq!(required_access(&method, &path), Write, "{} {}", method, path);
    }

    /// Whatever arrives, the lookup answers and never panics.
    #[test]
    fn arbitrary_input_never_panics(method in "\\PC{0,8}", path in "\\PC{0,200}") {
        let _ = required_access(&method, &path);
        let _ = required_access(&method, &format!("/api/2.0/mlflow/{path}"));
        let _ = required_access("GET", &format!("/api/3.0/mlflow/mcp-servers/{path}"));
    }

    /// Paths made of the table's own words and wildcards-like pieces: never a panic, and
    /// never a read unless some entry of that method matches it.
    #[test]
    fn table_like_paths_are_reads_only_by_an_entry(
        method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        prefix in prop::sample::select(ROUTE_PREFIXES.to_vec()),
        root in prop::sample::select(ROOTS.to_vec()),
        segs in prop::collection::vec(
            prop_oneof![prop::sample::select(table_words().iter().copied().collect::<Vec<_>>()).prop_map(str::to_string), segment()],
            1..8,
        ),
    ) {
        let endpoint = segs.join("/");
        let path = format!("{prefix}{}{endpoint}", root.as_str());
        if required_access(method, &path) == Read {
            let m = Method::parse(method).unwrap();
            prop_assert!(endpoint_table().iter().any(|e| e.method == m && e.access == Read && e.roots.includes(root) && e.fits(&endpoint)), "{} {}", method, path);
            prop_assert!(!endpoint_table().iter().any(|e| e.method == m && e.access == Write && e.roots.includes(root) && e.fits(&endpoint)), "{} {}", method, path);
        }
    }
}

#[test]
fn any_scope_of_the_set_grants_access() {
    let sets = ScopeSets::default();
    let granted = vec!["mlflow:access".to_string()];
    assert!(Read.is_granted_by(&granted, &sets));
    assert!(Write.is_granted_by(&granted, &sets));
    let read_only = vec!["mlflow:read".to_string()];
    assert!(!Write.is_granted_by(&read_only, &sets));
    assert!(!Read.is_granted_by(&[], &sets));
    assert_eq!(Write.canonical_scope(&sets), "mlflow:write");
}

#[test]
fn no_ui_route_reaches_into_the_api_roots() {
    // `lookup` skips the UI reading of `/api/...` and `/ajax-api/...` paths: sound only while
    // no UI pattern could match there (a leading wildcard, or the API roots themselves).
    for e in endpoint_table().iter().filter(|e| e.roots == Roots::Ui) {
        assert!(
            !e.pattern.starts_with('{')
                && !e.pattern.starts_with("api/")
                && !e.pattern.starts_with("ajax-api/")
                && e.pattern != "api"
                && e.pattern != "ajax-api",
            "{:?}",
            e.pattern
        );
    }
}
