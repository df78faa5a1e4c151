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
    // Five ports, the authority, the wasm, three certificate files and the JWKS.
    assert_eq!(changed, 11);
}
