//! Where the suite finds its inputs, and a scratch directory that cleans up after itself.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The artifact `make build` writes, relative to the repo root, as envoy.yaml names it.
pub const WASM_REL: &str = "target/wasm32-wasip1/release/hokusai_auth_filter.wasm";
/// The same artifact relative to cargo's target directory.
pub const WASM_IN_TARGET: &str = "wasm32-wasip1/release/hokusai_auth_filter.wasm";

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn envoy_yaml() -> PathBuf {
    repo_root().join("envoy/envoy.yaml")
}

pub fn venv_bin(name: &str) -> PathBuf {
    repo_root().join(".venv/bin").join(name)
}

/// Cargo's target directory for a given `CARGO_TARGET_DIR`: that directory when set and
/// not empty (a relative one is taken from the repo root, as the Makefile does), else
/// `target/` in the repo.
pub fn target_dir_for(cargo_target_dir: Option<OsString>) -> PathBuf {
    match cargo_target_dir {
        Some(dir) if !dir.is_empty() => repo_root().join(dir),
        _ => repo_root().join("target"),
    }
}

/// The filter under test: `HOKUSAI_E2E_WASM` when set (any build, anywhere), else the
/// artifact `make build` wrote, under `$CARGO_TARGET_DIR` when that is set. Both are read
/// at run time: cargo hands its environment to the test binaries it runs.
pub fn wasm() -> PathBuf {
    std::env::var_os("HOKUSAI_E2E_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            target_dir_for(std::env::var_os("CARGO_TARGET_DIR")).join(WASM_IN_TARGET)
        })
}

/// The test build of the filter (`make build-testing`: the `testing` cargo feature, which
/// adds the `testing.trap_path` switch), in its own target directory so it can never be
/// mistaken for the artifact `make build` writes.
pub fn testing_wasm() -> PathBuf {
    target_dir_for(std::env::var_os("CARGO_TARGET_DIR"))
        .join("testing")
        .join(WASM_IN_TARGET)
}

pub fn certs_dir() -> PathBuf {
    repo_root().join("certs")
}

pub fn cert(file: &str) -> PathBuf {
    certs_dir().join(file)
}

/// Panics (never skips) when an input is missing, naming what makes it.
pub fn require(path: &Path, made_by: &str) {
    assert!(
        path.exists(),
        "e2e: {} is missing; run `{made_by}` first (or `make test`, which does it all)",
        path.display()
    );
}

/// Checks everything an Envoy-based test needs before anything is started.
pub fn require_envoy_inputs() {
    require(&venv_bin("envoy"), "make venv");
    require(&wasm(), "make build");
    for file in [
        "ca.crt",
        "ca.crl",
        "server.crt",
        "server.key",
        "client.crt",
        "client.key",
        "jwks.json",
        "jwt-signing.key",
        "oauth-client-secret",
        "oauth-client-secret.sds.yaml",
        "oauth-hmac.sds.yaml",
    ] {
        require(&cert(file), "make certs");
    }
}

/// A fresh directory under the system temp dir, removed on drop unless the test is
/// failing, so its logs stay around to read.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("hokusai-e2e-{label}-{}-{n}", std::process::id()));
        // A leftover from an earlier run with the same pid is stale by definition.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("e2e: cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("e2e: keeping {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Ports nobody listens on right now, for the caller to hand to a child process.
///
/// Not the kernel's `bind(:0)`: that draws from the ephemeral range, the same ports every
/// outgoing connection takes, so between our release and the child's bind a test's own
/// client or Envoy's upstream connection could take the port (seen once in CI: Envoy
/// exiting on "Address already in use"). These come from below the ephemeral range
/// (32768 and up on Linux), from a block chosen by the process id so that concurrent test
/// binaries rarely meet, each checked free by binding it; `make run`'s fixed ports
/// (5000, 8000, 9901, 10000, 10443) are below the block.
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % (SPAN / 200) * 200;
    std::array::from_fn(|_| {
        (0..SPAN)
            .map(|_| (FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16)
            .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
            .expect("a free port in 20000-31999")
    })
}
