//! envoy/envoy.yaml as committed: valid for Envoy 1.40 with the real filter, and the
//! suite's rendering of it touches nothing but ports and file paths.

mod e2e;

use std::process::Command;

use e2e::envoy::{render, Ports, Upstreams};
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

/// The filter trusts Envoy's x-forwarded-client-cert and Envoy's pause semantics; every Envoy
/// config in the repo that runs the filter must keep the settings that make that safe.
#[test]
fn every_config_running_the_filter_keeps_its_safety_settings() {
    let mut checked = 0;
    let mut dirs = vec![paths::repo_root().join("envoy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read envoy/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            if !text.contains("envoy.filters.http.wasm") || !text.contains("hokusai_auth") {
                continue;
            }
            let name = path.display();
            let settings: Vec<&str> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("forward_client_cert_details:"))
                .map(str::trim)
                .collect();
            assert!(
                !settings.is_empty() && settings.iter().all(|s| *s == "SANITIZE_SET"),
                "{name}: every connection manager in front of the filter needs \
                 forward_client_cert_details: SANITIZE_SET, found {settings:?}"
            );
            assert!(
                text.contains("set_current_client_cert_details: { subject: true, cert: true, uri: true, dns: true }"),
                "{name}: Envoy must write subject, cert, URI and DNS into its XFCC"
            );
            assert!(
                !text.contains("allow_on_headers_stop_iteration: true"),
                "{name}: a paused request's body must stay held until its verdict"
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "envoy/envoy.yaml at least");
}
