//! `make certs` (issue 7): every file `certs/generate.sh` writes is a make target, so
//! deleting any one of them brings it back, and a complete set is left alone. Runs the
//! real Makefile and script on a copy in a scratch directory, never on `certs/` itself
//! (other suites use those files while this runs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A directory of its own (tests run in parallel) holding just the Makefile and
/// certs/generate.sh.
fn scratch_copy(label: &str) -> Scratch {
    let dir =
        std::env::temp_dir().join(format!("hokusai-certs-make-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::copy(repo().join("Makefile"), dir.join("Makefile")).unwrap();
    std::fs::copy(
        repo().join("certs/generate.sh"),
        dir.join("certs/generate.sh"),
    )
    .unwrap();
    Scratch(dir)
}

fn make(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("make")
        .args(["--no-print-directory", "-C"])
        .arg(dir)
        .args(args)
        // A developer's MAKEFLAGS (say -j or -k) must not change what is tested.
        .env_remove("MAKEFLAGS")
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "make {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn generated_files(dir: &Path) -> Vec<String> {
    let out = Command::new("bash")
        .arg(dir.join("certs/generate.sh"))
        .arg("--list")
        .output()
        .unwrap();
    stdout(&out).split_whitespace().map(str::to_owned).collect()
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join("certs").join(file)).unwrap_or_else(|e| panic!("certs/{file}: {e}"))
}

#[test]
fn deleting_any_generated_file_and_running_make_certs_brings_it_back() {
    let scratch = scratch_copy("regen");
    let dir = scratch.0.as_path();
    let files = generated_files(dir);
    // The PKI of CONTRACT section 3 and the JWT signing key with its JWKS.
    for must in [
        "ca.crt",
        "client.pem",
        "expired-client.key",
        "revoked-client.crt",
        "ca.crl",
        "crl-index.txt",
        "jwt-signing.key",
        "jwks.json",
    ] {
        assert!(files.iter().any(|f| f == must), "{must} not in {files:?}");
    }

    make(dir, &["certs"]);
    for file in &files {
        assert!(!read(dir, file).is_empty(), "certs/{file} is empty");
    }
    // Idempotent: a complete set is not rebuilt, not even checked again.
    let again = stdout(&make(dir, &["certs"]));
    assert!(again.contains("Nothing to be done"), "{again}");

    // Any missing file makes `certs` out of date (a dry run, so this stays quick)...
    for file in &files {
        let path = dir.join("certs").join(file);
        let kept = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let plan = stdout(&make(dir, &["-n", "certs"]));
        assert!(plan.contains("generate.sh"), "deleting {file}: {plan}");
        std::fs::write(&path, kept).unwrap();
    }

    // ... and really brings it back: a PKI file other than ca.crt (the old bug), then
    // each half of the JWT set. Each set is rebuilt on its own.
    let ca = read(dir, "ca.crt");
    let jwks = read(dir, "jwks.json");
    let signing_key = read(dir, "jwt-signing.key");

    std::fs::remove_file(dir.join("certs/expired-client.key")).unwrap();
    make(dir, &["certs"]);
    assert!(!read(dir, "expired-client.key").is_empty());
    assert_ne!(read(dir, "ca.crt"), ca, "a broken PKI is rebuilt whole");
    assert_eq!(read(dir, "jwks.json"), jwks, "the JWT key is left alone");

    std::fs::remove_file(dir.join("certs/jwks.json")).unwrap();
    let ca = read(dir, "ca.crt");
    make(dir, &["certs"]);
    assert_eq!(
        read(dir, "jwks.json"),
        jwks,
        "rewritten from the kept signing key"
    );
    assert_eq!(read(dir, "jwt-signing.key"), signing_key);
    assert_eq!(read(dir, "ca.crt"), ca, "the PKI is left alone");

    std::fs::remove_file(dir.join("certs/jwt-signing.key")).unwrap();
    make(dir, &["certs"]);
    assert_ne!(read(dir, "jwt-signing.key"), signing_key, "a new key...");
    assert_ne!(read(dir, "jwks.json"), jwks, "... and its JWKS");

    let settled = stdout(&make(dir, &["certs"]));
    assert!(settled.contains("Nothing to be done"), "{settled}");
}

#[test]
fn private_keys_are_private_and_git_ignores_every_generated_file() {
    let scratch = scratch_copy("modes");
    let dir = scratch.0.as_path();
    make(dir, &["certs"]);
    use std::os::unix::fs::PermissionsExt;
    for file in generated_files(dir) {
        let mode = std::fs::metadata(dir.join("certs").join(&file))
            .unwrap()
            .permissions()
            .mode();
        if file.ends_with(".key") || file == "client.pem" {
            assert_eq!(mode & 0o077, 0, "certs/{file} is readable by others");
        }
        // Checked against the repo's .gitignore, whether or not the file exists there.
        let ignored = Command::new("git")
            .args(["check-ignore", "-q", "--no-index"])
            .arg(format!("certs/{file}"))
            .current_dir(repo())
            .status()
            .expect("run git");
        assert!(ignored.success(), "certs/{file} is not git-ignored");
    }
}

/// What `openssl verify -crl_check` says of a certificate against the scratch CA and CRL.
fn verify_with_crl(dir: &Path, cert: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "verify",
            "-crl_check",
            "-CAfile",
            "ca.crt",
            "-CRLfile",
            "ca.crl",
            cert,
        ])
        .current_dir(dir.join("certs"))
        .output()
        .expect("run openssl verify");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.trim().to_owned()
}

#[test]
fn make_revoke_lists_a_dev_certificate_in_the_crl_and_the_list_outlives_a_lost_crl() {
    let scratch = scratch_copy("revoke");
    let dir = scratch.0.as_path();
    make(dir, &["certs"]);
    // The dev CRL revokes revoked-client only.
    assert!(verify_with_crl(dir, "revoked-client.crt").contains("certificate revoked"));
    assert_eq!(
        verify_with_crl(dir, "unlisted-client.crt"),
        "unlisted-client.crt: OK"
    );

    let ca = read(dir, "ca.crt");
    let said = stdout(&make(dir, &["revoke", "CERT=certs/unlisted-client.crt"]));
    assert!(
        said.contains("revoked subject=CN = hokusai-notebook"),
        "{said}"
    );
    assert!(verify_with_crl(dir, "unlisted-client.crt").contains("certificate revoked"));
    assert_eq!(verify_with_crl(dir, "client.crt"), "client.crt: OK");
    assert_eq!(read(dir, "ca.crt"), ca, "same CA");
    let settled = stdout(&make(dir, &["certs"]));
    assert!(settled.contains("Nothing to be done"), "{settled}");

    // The CRL is rebuilt from crl-index.txt: the revocation stays.
    std::fs::remove_file(dir.join("certs/ca.crl")).unwrap();
    make(dir, &["certs"]);
    assert!(verify_with_crl(dir, "unlisted-client.crt").contains("certificate revoked"));
    assert_eq!(read(dir, "ca.crt"), ca, "a lost CRL does not cost the CA");

    // Only certificates of the dev CA can be revoked.
    let out = Command::new("make")
        .args(["--no-print-directory", "-C"])
        .arg(dir)
        .args(["revoke", "CERT=certs/rogue-client.crt"])
        .env_remove("MAKEFLAGS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is not a certificate of the dev CA"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
