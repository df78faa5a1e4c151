//! Which access an MLflow call needs. Decided by endpoint, not only by method: MLflow sends
//! many reads as POST (`runs/search`, `experiments/search`, ...). Unknown means write.

use super::config::ScopeSets;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// API markers after which the endpoint name starts, whatever prefix the route strips.
const API_MARKERS: [&str; 3] = ["/2.0/mlflow/", "/3.0/mlflow/", "/2.0/mlflow-artifacts/"];

pub fn required_access(method: &str, path: &str) -> Access {
    if method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD") {
        return Access::Read;
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let endpoint = API_MARKERS
        .iter()
        .find_map(|marker| path.find(marker).map(|at| &path[at + marker.len()..]));
    match endpoint {
        Some(endpoint) if is_read_endpoint(endpoint) => Access::Read,
        _ => Access::Write,
    }
}

fn is_read_endpoint(endpoint: &str) -> bool {
    let last = endpoint
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    last.starts_with("get")
        || last.starts_with("search")
        || last.starts_with("list")
        || last.contains("download")
}

impl Access {
    pub fn accepted_scopes<'a>(&self, sets: &'a ScopeSets) -> &'a [String] {
        match self {
            Access::Read => &sets.read,
            Access::Write => &sets.write,
        }
    }

    /// The scope named in a 403 body: the first, canonical one of the configured set.
    pub fn canonical_scope<'a>(&self, sets: &'a ScopeSets) -> &'a str {
        self.accepted_scopes(sets)
            .first()
            .map_or("", String::as_str)
    }

    pub fn is_granted_by(&self, granted: &[String], sets: &ScopeSets) -> bool {
        let accepted = self.accepted_scopes(sets);
        granted.iter().any(|scope| accepted.contains(scope))
    }
}

#[cfg(test)]
mod tests {
    use super::Access::*;
    use super::*;

    #[test]
    fn endpoints_map_to_read_or_write() {
        let cases = [
            ("POST", "/api/2.0/mlflow/runs/search", Read),
            ("POST", "/api/2.0/mlflow/experiments/search", Read),
            ("POST", "/api/2.0/mlflow/runs/create", Write),
            ("POST", "/api/2.0/mlflow/runs/log-metric", Write),
            (
                "GET",
                "/api/2.0/mlflow/experiments/get?experiment_id=1",
                Read,
            ),
            ("POST", "/api/2.0/mlflow/experiments/get-by-name", Read),
            ("GET", "/api/2.0/mlflow/metrics/get-history?run_id=x", Read),
            (
                "POST",
                "/api/2.0/mlflow/registered-models/get-latest-versions",
                Read,
            ),
            ("POST", "/api/2.0/mlflow/unheard-of/endpoint", Write),
            ("POST", "/api/mlflow/api/2.0/mlflow/runs/search", Read),
            ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/search", Read),
            ("POST", "/ajax-api/2.0/mlflow/artifacts/list", Read),
            (
                "PUT",
                "/api/2.0/mlflow-artifacts/artifacts/1/run/artifacts/model.pkl",
                Write,
            ),
            ("HEAD", "/api/2.0/mlflow-artifacts/artifacts/1/x", Read),
            ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/1/x", Write),
            ("POST", "/api/3.0/mlflow/traces/search", Read),
            ("POST", "/api/3.0/mlflow/traces", Write),
            ("POST", "/api/2.0/mlflow/runs/search?x=/get", Read),
            ("POST", "/not-mlflow/search", Write),
            ("PATCH", "/api/2.0/mlflow/runs/update", Write),
        ];
        for (method, path, want) in cases {
            assert_eq!(required_access(method, path), want, "{method} {path}");
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
}
