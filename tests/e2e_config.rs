//! envoy/envoy.yaml as committed: valid for Envoy 1.40 with the real filter, and the
//! suite's rendering of it touches nothing but ports and file paths.

mod e2e;

use std::process::Command;

use e2e::envoy::{render, render_with, EnvoyOptions, Ports, Tuning, Upstreams};
use e2e::paths;

#[test]
fn committed_config_validates_from_the_repo_root() {
    // Exactly what a user runs: relative paths, the default artifact location. When the
    // artifact is elsewhere (CARGO_TARGET_DIR, HOKUSAI_E2E_WASM), a copy names it instead,
    // and nothing else changes.
    paths::require(&paths::venv_bin("envoy"), "make venv");
    paths::require(&paths::wasm(), "make build");
    paths::require(&paths::cert("server.crt"), "make certs");
    let scratch = paths::TempDir::new("validate");
    let config = if paths::wasm() == paths::repo_root().join(paths::WASM_REL) {
        paths::envoy_yaml()
    } else {
        let yaml = std::fs::read_to_string(paths::envoy_yaml()).unwrap();
        let from = format!("filename: {}", paths::WASM_REL);
        assert_eq!(yaml.matches(&from).count(), 1, "{from:?} in envoy.yaml");
        let copy = scratch.join("envoy.yaml");
        let to = format!("filename: {}", paths::wasm().display());
        std::fs::write(&copy, yaml.replace(&from, &to)).unwrap();
        copy
    };
    let out = Command::new(paths::venv_bin("envoy"))
        .args(["--mode", "validate", "-c"])
        .arg(&config)
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
    // Five ports, the authority, the wasm, four certificate files (server pair, CA, CRL)
    // and the JWKS.
    assert_eq!(changed, 12);
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

#[test]
fn the_artifact_is_looked_for_under_cargo_target_dir() {
    let root = paths::repo_root();
    assert_eq!(paths::target_dir_for(None), root.join("target"));
    assert_eq!(paths::target_dir_for(Some("".into())), root.join("target"));
    assert_eq!(paths::target_dir_for(Some("out".into())), root.join("out"));
    assert_eq!(
        paths::target_dir_for(Some("/elsewhere/tgt".into())),
        std::path::PathBuf::from("/elsewhere/tgt")
    );
    // By default it is the path envoy.yaml names.
    assert_eq!(
        paths::target_dir_for(None).join(paths::WASM_IN_TARGET),
        root.join(paths::WASM_REL)
    );
    // HOKUSAI_E2E_WASM, when set, overrides the target directory.
    if std::env::var_os("HOKUSAI_E2E_WASM").is_none() {
        let target = paths::target_dir_for(std::env::var_os("CARGO_TARGET_DIR"));
        assert_eq!(paths::wasm(), target.join(paths::WASM_IN_TARGET));
    }
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
        max_entries: Some(77),
    };
    let plain = render(ports, up);
    let with = |tuning| {
        render_with(
            ports,
            up,
            EnvoyOptions {
                tuning,
                ..EnvoyOptions::default()
            },
        )
    };
    let tuned = with(tuning);
    assert_eq!(with(Tuning::default()), plain);
    let changed: Vec<(&str, &str)> = plain
        .lines()
        .zip(tuned.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed.len(), 5, "{changed:#?}");

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
    assert_eq!(config.cache.max_entries, 77);
    assert_eq!(committed.cache.max_entries, 10_000);
}
