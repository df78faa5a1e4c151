//! Every endpoint MLflow 3.17.2 serves under `/api/` and `/ajax-api/`, and the few routes of
//! its web UI, and whether calling each is a read or a write. `tests/scope_routes.rs`
//! compares this list with the routes of the MLflow server installed in `.venv`, both ways
//! (and walks its GraphQL schema), so an upgrade cannot slip past it.
//!
//! The judgement, per endpoint, follows what the call does, cross-checked with the
//! permission MLflow's own auth app demands for it: a read-level permission (or none, for
//! a call that only shows data) is `R`; creating, changing, deleting, running a job or a
//! model, or an admin-only call is `W`. Calls MLflow sends as POST but that only query
//! (`runs/search`, `traces/batchGetInfos`, ...) are reads; a few GETs are writes.

use super::Access::{Read as R, Write as W};
use super::Method::{Delete, Get, Patch, Post, Put};
use super::{Access, Endpoint, Method, Roots};

const fn both(method: Method, pattern: &'static str, access: Access) -> Endpoint {
    Endpoint::new(Roots::Both, method, pattern, access)
}

/// Served under `/ajax-api/` only.
const fn ajax(method: Method, pattern: &'static str, access: Access) -> Endpoint {
    Endpoint::new(Roots::Ajax, method, pattern, access)
}

/// The web UI's routes, right below the route prefix (`/mlflow/graphql`).
const fn ui(method: Method, pattern: &'static str, access: Access) -> Endpoint {
    Endpoint::new(Roots::Ui, method, pattern, access)
}

/// The table. Order does not matter (lookups use a sorted copy); grouped by MLflow service
/// for reading.
pub(super) const ENDPOINTS: &[Endpoint] = &[
    // Artifact proxy (`--artifacts-destination`): only GET reads. The path is the
    // caller's choice, so it never decides.
    both(Get, "2.0/mlflow-artifacts/artifacts", R),
    both(Get, "2.0/mlflow-artifacts/artifacts/{*}", R),
    both(Put, "2.0/mlflow-artifacts/artifacts/{*}", W),
    both(Delete, "2.0/mlflow-artifacts/artifacts/{*}", W),
    both(Post, "2.0/mlflow-artifacts/mpu/create/{*}", W),
    both(Post, "2.0/mlflow-artifacts/mpu/complete/{*}", W),
    both(Post, "2.0/mlflow-artifacts/mpu/abort/{*}", W),
    both(Get, "2.0/mlflow-artifacts/presigned/{*}", R),
    // Run artifacts through the tracking API.
    both(Get, "2.0/mlflow/artifacts/list", R),
    both(Post, "2.0/mlflow/artifacts/presigned-download-url", R),
    both(Post, "2.0/mlflow/artifacts/presigned-upload-url", W),
    ajax(Post, "2.0/mlflow/upload-artifact", W),
    ajax(Get, "2.0/mlflow/get-trace-artifact", R),
    // Experiments.
    both(Post, "2.0/mlflow/experiments/create", W),
    both(Post, "2.0/mlflow/experiments/delete", W),
    both(Post, "2.0/mlflow/experiments/restore", W),
    both(Post, "2.0/mlflow/experiments/update", W),
    both(Post, "2.0/mlflow/experiments/set-experiment-tag", W),
    both(Post, "2.0/mlflow/experiments/delete-experiment-tag", W),
    both(Get, "2.0/mlflow/experiments/get", R),
    both(Get, "2.0/mlflow/experiments/get-by-name", R),
    // Not served by MLflow 3.17 (GET only there); kept because the contract names it
    // as a POST read. MLflow answers it 405, so it reads nothing either way.
    both(Post, "2.0/mlflow/experiments/get-by-name", R),
    both(Get, "2.0/mlflow/experiments/search", R),
    both(Post, "2.0/mlflow/experiments/search", R),
    ajax(Post, "2.0/mlflow/experiments/search-datasets", R),
    // A misspelt route MLflow registers with a "not implemented" handler.
    both(Post, "2.0mlflow/experiments/search-datasets", W),
    // Runs.
    both(Post, "2.0/mlflow/runs/create", W),
    ajax(Post, "2.0/mlflow/runs/create-promptlab-run", W),
    both(Post, "2.0/mlflow/runs/delete", W),
    both(Post, "2.0/mlflow/runs/restore", W),
    both(Post, "2.0/mlflow/runs/update", W),
    both(Post, "2.0/mlflow/runs/log-batch", W),
    both(Post, "2.0/mlflow/runs/log-inputs", W),
    both(Post, "2.0/mlflow/runs/log-metric", W),
    both(Post, "2.0/mlflow/runs/log-model", W),
    both(Post, "2.0/mlflow/runs/log-parameter", W),
    both(Post, "2.0/mlflow/runs/outputs", W),
    both(Post, "2.0/mlflow/runs/set-tag", W),
    both(Post, "2.0/mlflow/runs/delete-tag", W),
    both(Get, "2.0/mlflow/runs/get", R),
    both(Post, "2.0/mlflow/runs/search", R),
    both(Get, "2.0/mlflow/metrics/get-history", R),
    ajax(Get, "2.0/mlflow/metrics/get-history-bulk", R),
    both(Get, "2.0/mlflow/metrics/get-history-bulk-interval", R),
    // Logged models.
    both(Post, "2.0/mlflow/logged-models", W),
    both(Post, "2.0/mlflow/logged-models/search", R),
    both(Get, "2.0/mlflow/logged-models/{}", R),
    both(Patch, "2.0/mlflow/logged-models/{}", W),
    both(Delete, "2.0/mlflow/logged-models/{}", W),
    both(Post, "2.0/mlflow/logged-models/{}/params", W),
    both(Patch, "2.0/mlflow/logged-models/{}/tags", W),
    both(Delete, "2.0/mlflow/logged-models/{}/tags/{}", W),
    both(Get, "2.0/mlflow/logged-models/{}/artifacts/directories", R),
    ajax(Get, "2.0/mlflow/logged-models/{}/artifacts/files", R),
    // Model registry (models and prompts share it).
    both(Post, "2.0/mlflow/registered-models/create", W),
    both(Delete, "2.0/mlflow/registered-models/delete", W),
    both(Post, "2.0/mlflow/registered-models/rename", W),
    both(Patch, "2.0/mlflow/registered-models/update", W),
    both(Post, "2.0/mlflow/registered-models/set-tag", W),
    both(Delete, "2.0/mlflow/registered-models/delete-tag", W),
    both(Get, "2.0/mlflow/registered-models/get", R),
    both(Get, "2.0/mlflow/registered-models/search", R),
    both(Get, "2.0/mlflow/registered-models/get-latest-versions", R),
    both(Post, "2.0/mlflow/registered-models/get-latest-versions", R),
    both(Get, "2.0/mlflow/registered-models/alias", R),
    both(Post, "2.0/mlflow/registered-models/alias", W),
    both(Delete, "2.0/mlflow/registered-models/alias", W),
    both(Post, "2.0/mlflow/model-versions/create", W),
    both(Delete, "2.0/mlflow/model-versions/delete", W),
    both(Patch, "2.0/mlflow/model-versions/update", W),
    both(Post, "2.0/mlflow/model-versions/transition-stage", W),
    both(Post, "2.0/mlflow/model-versions/set-tag", W),
    both(Delete, "2.0/mlflow/model-versions/delete-tag", W),
    both(Get, "2.0/mlflow/model-versions/get", R),
    both(Get, "2.0/mlflow/model-versions/get-download-uri", R),
    both(Get, "2.0/mlflow/model-versions/search", R),
    // Traces, v2 API.
    both(Get, "2.0/mlflow/traces", R),
    both(Post, "2.0/mlflow/traces", W),
    both(Patch, "2.0/mlflow/traces/{}", W),
    both(Get, "2.0/mlflow/traces/{}/info", R),
    both(Patch, "2.0/mlflow/traces/{}/tags", W),
    both(Delete, "2.0/mlflow/traces/{}/tags", W),
    both(Post, "2.0/mlflow/traces/delete-traces", W),
    both(Post, "2.0/mlflow/traces/link-prompts", W),
    both(Post, "2.0/mlflow/traces/link-to-run", W),
    both(Get, "2.0/mlflow/unified-traces", R),
    both(Get, "2.0/mlflow/get-online-trace-details", R),
    // Webhooks: admin-only in MLflow (their targets and settings are not for every
    // reader), so even listing them needs write.
    both(Get, "2.0/mlflow/webhooks", W),
    both(Post, "2.0/mlflow/webhooks", W),
    both(Get, "2.0/mlflow/webhooks/{}", W),
    both(Patch, "2.0/mlflow/webhooks/{}", W),
    both(Delete, "2.0/mlflow/webhooks/{}", W),
    both(Post, "2.0/mlflow/webhooks/{}/test", W),
    // AI gateway proxy: GET only lists the gateway's endpoints; POST invokes a model.
    ajax(Get, "2.0/mlflow/gateway-proxy", R),
    ajax(Post, "2.0/mlflow/gateway-proxy", W),
    // Background jobs (FastAPI, UI only).
    ajax(Post, "3.0/jobs/", W),
    ajax(Post, "3.0/jobs/search", R),
    ajax(Get, "3.0/jobs/{}", R),
    ajax(Patch, "3.0/jobs/cancel/{}", W),
    ajax(Get, "3.0/mlflow/jobs/{}", R),
    ajax(Patch, "3.0/mlflow/jobs/cancel/{}", W),
    // Traces, v3 API.
    both(Post, "3.0/mlflow/traces", W),
    both(Get, "3.0/mlflow/traces/{}", R),
    both(Get, "3.0/mlflow/traces/get", R),
    both(Get, "3.0/mlflow/traces/batchGet", R),
    both(Post, "3.0/mlflow/traces/batchGetInfos", R),
    both(Post, "3.0/mlflow/traces/search", R),
    both(Post, "3.0/mlflow/traces/metrics", R),
    both(Post, "3.0/mlflow/traces/calculate-filter-correlation", R),
    both(Post, "3.0/mlflow/traces/delete-traces", W),
    both(Patch, "3.0/mlflow/traces/{}/tags", W),
    both(Delete, "3.0/mlflow/traces/{}/tags", W),
    both(Post, "3.0/mlflow/traces/{}/assessments", W),
    both(Get, "3.0/mlflow/traces/{}/assessments/{}", R),
    both(Patch, "3.0/mlflow/traces/{}/assessments/{}", W),
    both(Delete, "3.0/mlflow/traces/{}/assessments/{}", W),
    ajax(Get, "3.0/mlflow/get-trace-artifact", R),
    // Evaluation datasets.
    both(Post, "3.0/mlflow/datasets/create", W),
    both(Get, "3.0/mlflow/datasets/search", R),
    both(Post, "3.0/mlflow/datasets/search", R),
    both(Get, "3.0/mlflow/datasets/{}", R),
    both(Delete, "3.0/mlflow/datasets/{}", W),
    both(Get, "3.0/mlflow/datasets/{}/experiment-ids", R),
    both(Post, "3.0/mlflow/datasets/{}/add-experiments", W),
    both(Post, "3.0/mlflow/datasets/{}/remove-experiments", W),
    both(Get, "3.0/mlflow/datasets/{}/records", R),
    both(Post, "3.0/mlflow/datasets/{}/records", W),
    both(Delete, "3.0/mlflow/datasets/{}/records", W),
    both(Patch, "3.0/mlflow/datasets/{}/tags", W),
    both(Delete, "3.0/mlflow/datasets/{}/tags/{}", W),
    // Issues.
    both(Post, "3.0/mlflow/issues", W),
    both(Post, "3.0/mlflow/issues/search", R),
    both(Get, "3.0/mlflow/issues/{}", R),
    both(Patch, "3.0/mlflow/issues/{}", W),
    // Runs issue detection as a job.
    ajax(Post, "3.0/mlflow/issues/invoke", W),
    // Scorers and evaluation runs.
    both(Post, "3.0/mlflow/scorers/register", W),
    both(Delete, "3.0/mlflow/scorers/delete", W),
    both(Get, "3.0/mlflow/scorers/get", R),
    both(Get, "3.0/mlflow/scorers/list", R),
    both(Get, "3.0/mlflow/scorers/versions", R),
    both(Get, "3.0/mlflow/scorers/online-configs", R),
    both(Put, "3.0/mlflow/scorers/online-config", W),
    // Applies a scorer to traces and records the results.
    ajax(Post, "3.0/mlflow/scorer/invoke", W),
    ajax(Post, "3.0/mlflow/genai/evaluate/invoke", W),
    // Prompt optimization jobs.
    both(Post, "3.0/mlflow/prompt-optimization/jobs", W),
    both(Get, "3.0/mlflow/prompt-optimization/jobs/search", R),
    both(Post, "3.0/mlflow/prompt-optimization/jobs/search", R),
    both(Get, "3.0/mlflow/prompt-optimization/jobs/{}", R),
    both(Delete, "3.0/mlflow/prompt-optimization/jobs/{}", W),
    both(Post, "3.0/mlflow/prompt-optimization/jobs/{}/cancel", W),
    // Review queues and label schemas.
    both(Post, "3.0/mlflow/review-queues/create", W),
    both(Post, "3.0/mlflow/review-queues/update", W),
    both(Post, "3.0/mlflow/review-queues/delete", W),
    both(Get, "3.0/mlflow/review-queues/get", R),
    both(Get, "3.0/mlflow/review-queues/get-by-name", R),
    // Creates the caller's queue when it has none: a write despite its name.
    both(Post, "3.0/mlflow/review-queues/get-or-create-user", W),
    both(Get, "3.0/mlflow/review-queues/list", R),
    both(Post, "3.0/mlflow/review-queues/items/add", W),
    both(Post, "3.0/mlflow/review-queues/items/remove", W),
    both(Post, "3.0/mlflow/review-queues/items/set-status", W),
    both(Get, "3.0/mlflow/review-queues/items/list", R),
    both(Post, "3.0/mlflow/label-schemas/create", W),
    both(Patch, "3.0/mlflow/label-schemas/update", W),
    both(Delete, "3.0/mlflow/label-schemas/delete", W),
    both(Get, "3.0/mlflow/label-schemas/get", R),
    both(Get, "3.0/mlflow/label-schemas/get-by-name", R),
    both(Get, "3.0/mlflow/label-schemas/list", R),
    // AI gateway configuration.
    both(Post, "3.0/mlflow/gateway/secrets/create", W),
    both(Post, "3.0/mlflow/gateway/secrets/update", W),
    both(Delete, "3.0/mlflow/gateway/secrets/delete", W),
    both(Get, "3.0/mlflow/gateway/secrets/get", R),
    both(Get, "3.0/mlflow/gateway/secrets/list", R),
    ajax(Get, "3.0/mlflow/gateway/secrets/config", R),
    ajax(Get, "3.0/mlflow/gateway/provider-config", R),
    ajax(Get, "3.0/mlflow/gateway/supported-models", R),
    ajax(Get, "3.0/mlflow/gateway/supported-providers", R),
    both(Post, "3.0/mlflow/gateway/endpoints/create", W),
    both(Post, "3.0/mlflow/gateway/endpoints/update", W),
    both(Delete, "3.0/mlflow/gateway/endpoints/delete", W),
    both(Get, "3.0/mlflow/gateway/endpoints/get", R),
    both(Get, "3.0/mlflow/gateway/endpoints/list", R),
    both(Post, "3.0/mlflow/gateway/endpoints/set-tag", W),
    both(Delete, "3.0/mlflow/gateway/endpoints/delete-tag", W),
    both(Post, "3.0/mlflow/gateway/endpoints/models/attach", W),
    both(Post, "3.0/mlflow/gateway/endpoints/models/detach", W),
    both(Post, "3.0/mlflow/gateway/endpoints/bindings/create", W),
    both(Delete, "3.0/mlflow/gateway/endpoints/bindings/delete", W),
    both(Get, "3.0/mlflow/gateway/endpoints/bindings/list", R),
    both(Post, "3.0/mlflow/gateway/model-definitions/create", W),
    both(Post, "3.0/mlflow/gateway/model-definitions/update", W),
    both(Delete, "3.0/mlflow/gateway/model-definitions/delete", W),
    both(Get, "3.0/mlflow/gateway/model-definitions/get", R),
    both(Get, "3.0/mlflow/gateway/model-definitions/list", R),
    both(Post, "3.0/mlflow/gateway/budgets/create", W),
    both(Post, "3.0/mlflow/gateway/budgets/update", W),
    both(Delete, "3.0/mlflow/gateway/budgets/delete", W),
    both(Get, "3.0/mlflow/gateway/budgets/get", R),
    both(Get, "3.0/mlflow/gateway/budgets/list", R),
    both(Get, "3.0/mlflow/gateway/budgets/windows", R),
    // Standalone guardrails are admin-only in MLflow, reads included.
    both(Post, "3.0/mlflow/gateway/guardrails/create", W),
    both(Delete, "3.0/mlflow/gateway/guardrails/delete", W),
    both(Get, "3.0/mlflow/gateway/guardrails/get", W),
    both(Get, "3.0/mlflow/gateway/guardrails/list", W),
    both(Post, "3.0/mlflow/gateway/guardrails/add-to-endpoint", W),
    both(
        Delete,
        "3.0/mlflow/gateway/guardrails/remove-from-endpoint",
        W,
    ),
    both(Patch, "3.0/mlflow/gateway/guardrails/update-config", W),
    both(Get, "3.0/mlflow/gateway/guardrails/list-for-endpoint", R),
    // MCP server registry (FastAPI; a server name spans segments).
    both(Get, "3.0/mlflow/mcp-servers", R),
    both(Post, "3.0/mlflow/mcp-servers", W),
    both(Get, "3.0/mlflow/mcp-servers/endpoints", R),
    both(Get, "3.0/mlflow/mcp-servers/{*}", R),
    both(Patch, "3.0/mlflow/mcp-servers/{*}", W),
    both(Delete, "3.0/mlflow/mcp-servers/{*}", W),
    both(Post, "3.0/mlflow/mcp-servers/{*}/tags", W),
    both(Delete, "3.0/mlflow/mcp-servers/{*}/tags/{*}", W),
    both(Post, "3.0/mlflow/mcp-servers/{*}/aliases", W),
    both(Get, "3.0/mlflow/mcp-servers/{*}/aliases/{*}", R),
    both(Delete, "3.0/mlflow/mcp-servers/{*}/aliases/{*}", W),
    both(Get, "3.0/mlflow/mcp-servers/{*}/endpoints", R),
    both(Post, "3.0/mlflow/mcp-servers/{*}/endpoints", W),
    both(Get, "3.0/mlflow/mcp-servers/{*}/endpoints/{}", R),
    both(Patch, "3.0/mlflow/mcp-servers/{*}/endpoints/{}", W),
    both(Delete, "3.0/mlflow/mcp-servers/{*}/endpoints/{}", W),
    both(Get, "3.0/mlflow/mcp-servers/{*}/versions", R),
    both(Post, "3.0/mlflow/mcp-servers/{*}/versions", W),
    both(Get, "3.0/mlflow/mcp-servers/{*}/versions/{*}", R),
    both(Patch, "3.0/mlflow/mcp-servers/{*}/versions/{*}", W),
    both(Delete, "3.0/mlflow/mcp-servers/{*}/versions/{*}", W),
    both(Post, "3.0/mlflow/mcp-servers/{*}/versions/{*}/tags", W),
    both(
        Delete,
        "3.0/mlflow/mcp-servers/{*}/versions/{*}/tags/{*}",
        W,
    ),
    // The in-UI assistant (FastAPI, UI only).
    ajax(Get, "3.0/mlflow/assistant/config", R),
    ajax(Put, "3.0/mlflow/assistant/config", W),
    ajax(Get, "3.0/mlflow/assistant/providers", R),
    ajax(Get, "3.0/mlflow/assistant/providers/{}/health", R),
    ajax(Get, "3.0/mlflow/assistant/providers/{}/models", R),
    ajax(Post, "3.0/mlflow/assistant/message", W),
    ajax(Post, "3.0/mlflow/assistant/skills/install", W),
    ajax(Patch, "3.0/mlflow/assistant/sessions/{}", W),
    ajax(Post, "3.0/mlflow/assistant/sessions/{}/permission", W),
    ajax(Post, "3.0/mlflow/assistant/sessions/{}/tool-result", W),
    // A GET that drives the assistant's pending turn (tools included): a write.
    ajax(Get, "3.0/mlflow/assistant/sessions/{}/stream", W),
    // Workspaces: creating, changing and deleting them is admin-only.
    both(Get, "3.0/mlflow/workspaces", R),
    both(Post, "3.0/mlflow/workspaces", W),
    both(Get, "3.0/mlflow/workspaces/{}", R),
    both(Patch, "3.0/mlflow/workspaces/{}", W),
    both(Delete, "3.0/mlflow/workspaces/{}", W),
    // Server and UI plumbing.
    both(Get, "3.0/mlflow/server-info", R),
    ajax(Get, "3.0/mlflow/ui-telemetry", R),
    ajax(Post, "3.0/mlflow/ui-telemetry", W),
    // Loads (or deletes) demo data into the tracking store.
    ajax(Post, "3.0/mlflow/demo/generate", W),
    ajax(Post, "3.0/mlflow/demo/delete", W),
    // The web UI, so a read-only user can use it: its shell (`/`, which MLflow serves only
    // as that exact path), its bundled files, artifact downloads for run and model-version
    // pages, and GraphQL. Every field of MLflow 3.17's GraphQL schema, `Mutation` included,
    // resolves to a search or a get; tests/scope_routes.rs walks the installed schema and
    // fails on any field that could write, so POST stays a read only while that holds.
    ui(Get, "", R),
    ui(Get, "static-files/{*}", R),
    ui(Get, "get-artifact", R),
    ui(Get, "model-versions/get-artifact", R),
    ui(Get, "graphql", R),
    ui(Post, "graphql", R),
];
