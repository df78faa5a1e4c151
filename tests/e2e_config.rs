//! envoy/envoy.yaml as committed: valid for Envoy 1.40 with the real filter, and the
//! suite's rendering of it touches nothing but ports and file paths.

mod e2e;

use std::process::Command;

use e2e::envoy::{render, render_tuned, Ports, Tuning, Upstreams};
use e2e::paths;

#[test]
fn committed_config_validates_from_the_repo_root() {
    // Exactly what a user runs: relative paths, the default artifact location.
    paths::require(&paths::venv_bin("envoy"), "make venv");
    paths::require(&paths::repo_root().join(paths::WASM_REL), "make build");
    paths::require(&paths::cert("server.crt"), "make certs");
    let out = Command::new(paths::venv_bin("envoy"))
        .args(["--mode", "validate", "-c", "envoy/envoy.yaml"])
        .current_dir(paths::repo_root())
        .env_remove("HOKUSAI_AUTH_SERVICE_TOKEN")
        .output()
        .expect("run envoy --mode validate");
    // Validation also loads the wasm and hands it its JSON configuration, so a field the
    // filter refuses fails here too.
    assert!(
        out.status.success(),
        "envoy --mode validate failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rendering_changes_only_ports_and_paths() {
    let original = std::fs::read_to_string(paths::envoy_yaml()).unwrap();
    let rendered = render(
        Ports {
            plain: 40001,
            tls: 40002,
            admin: 40003,
        },
        Upstreams {
            auth_port: 40004,
            mlflow_port: 40005,
        },
    );
    assert_eq!(original.lines().count(), rendered.lines().count());
    let mut changed = 0;
    for (before, after) in original.lines().zip(rendered.lines()) {
        if before != after {
            changed += 1;
            assert!(
                ["port_value:", "filename:", "\"auth_authority\":"]
                    .iter()
                    .any(|marker| before.contains(marker)),
                "unexpected change:\n  {before}\n  {after}"
            );
        }
    }
    // Five ports, the authority, the wasm and three certificate files.
    assert_eq!(changed, 10);
}

/// The plugin configuration (the JSON block) of a rendered envoy.yaml.
fn plugin_json(yaml: &str) -> String {
    let mut lines = yaml
        .lines()
        .skip_while(|l| !l.trim_end().ends_with("value: |"));
    let header = lines.next().expect("the plugin configuration block");
    let indent = header.len() - header.trim_start().len();
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn tuning_changes_only_the_fields_it_names() {
    let ports = Ports {
        plain: 40001,
        tls: 40002,
        admin: 40003,
    };
    let up = Upstreams {
        auth_port: 40004,
        mlflow_port: 40005,
    };
    let tuning = Tuning {
        timeout_ms: Some(300),
        max_pending_callouts: Some(3),
        ttl_s: Some(2),
        negative_ttl_s: Some(1),
        stale_if_error_s: Some(4),
    };
    let plain = render(ports, up);
    let tuned = render_tuned(ports, up, tuning);
    assert_eq!(render_tuned(ports, up, Tuning::default()), plain);
    let changed: Vec<(&str, &str)> = plain
        .lines()
        .zip(tuned.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed.len(), 4, "{changed:#?}");

    // The filter itself reads the tuned JSON with exactly those values.
    let json = plugin_json(&tuned);
    let config = hokusai_auth_filter::core::config::FilterConfig::parse(json.as_bytes())
        .unwrap_or_else(|e| panic!("the filter refuses the tuned config: {e}\n{json}"));
    assert_eq!(config.timeout_ms, 300);
    assert_eq!(config.max_pending_callouts, 3);
    assert_eq!(
        (
            config.cache.ttl_s,
            config.cache.negative_ttl_s,
            config.cache.stale_if_error_s
        ),
        (2, 1, 4)
    );
    let committed =
        hokusai_auth_filter::core::config::FilterConfig::parse(plugin_json(&plain).as_bytes())
            .expect("committed config parses");
    assert_eq!(committed.max_pending_callouts, 256, "the default");
    assert_eq!(committed.cache.max_entries, config.cache.max_entries);
}
