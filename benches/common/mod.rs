//! What the cost-model benches share: the production plugin configuration and the
//! request the benchmark sends, so the numbers describe what `make bench` measures.
#![allow(dead_code)]

use std::path::Path;

/// The request bench.py sends (bench/scenarios.py `REQUEST_PATH`).
pub const REQUEST_PATH: &str = "/api/2.0/mlflow/experiments/get?experiment_id=0";

/// The filter's plugin configuration in envoy/envoy.yaml (the JSON under `value: |`),
/// so the cost model runs the configuration production runs.
pub fn envoy_plugin_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/envoy.yaml");
    let yaml = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let start = lines
        .iter()
        .position(|l| l.trim() == "value: |")
        .unwrap_or_else(|| panic!("{}: no `value: |` block", path.display()));
    let block: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > indent(lines[start]))
        .copied()
        .collect();
    block.join("\n")
}
