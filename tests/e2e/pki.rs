//! Throwaway certificates made in a test's temp dir with the `openssl` CLI: a second CA and
//! its leaves for rotation, a stand-in public CA for the auth service. Nothing here is
//! committed; the keys go when the directory does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use x509_cert::der::Decode as _;

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    /// certs/<stem>.crt and .key, as `make certs` writes them.
    pub fn dev(stem: &str) -> Pair {
        Pair {
            cert: super::paths::cert(&format!("{stem}.crt")),
            key: super::paths::cert(&format!("{stem}.key")),
        }
    }

    pub fn cert_pem(&self) -> String {
        read(&self.cert)
    }

    pub fn key_pem(&self) -> String {
        read(&self.key)
    }

    /// Certificate and key in one PEM, for `reqwest::Identity::from_pem`.
    pub fn identity(&self) -> reqwest::Identity {
        let pem = format!("{}{}", self.cert_pem(), self.key_pem());
        reqwest::Identity::from_pem(pem.as_bytes()).expect("identity PEM")
    }

    /// The certificate's DER, to compare with what a server presented.
    pub fn der(&self) -> Vec<u8> {
        pem_to_der(&self.cert_pem())
    }
}

pub struct Ca {
    pub pair: Pair,
    dir: PathBuf,
}

impl Ca {
    /// A self-signed CA named `cn`, files `<dir>/<name>.crt/.key`, and an empty CRL
    /// `<dir>/<name>.crl` (the sidecars want a CRL from every CA they trust).
    pub fn new(dir: &Path, name: &str, cn: &str) -> Ca {
        let pair = Pair {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        new_key(&pair.key);
        openssl(&[
            "req",
            "-new",
            "-x509",
            "-key",
            path_str(&pair.key),
            "-subj",
            &format!("/CN={cn}"),
            "-days",
            "2",
            "-sha256",
            "-set_serial",
            &serial(),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
            "-out",
            path_str(&pair.cert),
        ]);
        let ca = Ca {
            pair,
            dir: dir.to_path_buf(),
        };
        ca.crl(name, &[]);
        ca
    }

    /// The dev CA from `make certs`, which can sign too (its key is in certs/).
    pub fn dev(dir: &Path) -> Ca {
        Ca {
            pair: Pair::dev("ca"),
            dir: dir.to_path_buf(),
        }
    }

    /// A TLS server certificate for `dns` names (and 127.0.0.1). It allows client use too,
    /// as the sidecar's mTLS health check presents it (docs/deployment.md).
    pub fn server(&self, name: &str, cn: &str, dns: &[&str]) -> Pair {
        let mut san: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
        san.push("IP:127.0.0.1".into());
        self.leaf(name, cn, "serverAuth, clientAuth", &san.join(","))
    }

    /// A CRL of this CA revoking `revoked`, written to `<dir>/<name>.crl` (replacing any
    /// earlier one), valid from now for two days. Its CRL number grows with each call.
    pub fn crl(&self, name: &str, revoked: &[&Pair]) -> PathBuf {
        self.crl_dated(name, revoked, None)
    }

    /// A CRL whose validity is (lastUpdate, nextUpdate), as `YYYYMMDDHHMMSSZ`: a stale
    /// one when both are past.
    pub fn crl_dated(&self, name: &str, revoked: &[&Pair], dates: Option<(&str, &str)>) -> PathBuf {
        let db = self.dir.join(format!("{name}.crl-db"));
        let _ = std::fs::remove_dir_all(&db);
        std::fs::create_dir_all(&db).expect("create CRL database dir");
        std::fs::write(db.join("index.txt"), "").expect("write CRL index");
        // openssl reads the number as hex digits in pairs.
        let number = serial()[2..].to_string();
        let number = if number.len() % 2 == 1 {
            format!("0{number}")
        } else {
            number
        };
        std::fs::write(db.join("crlnumber"), format!("{number}\n")).expect("write CRL number");
        let conf = db.join("ca.cnf");
        std::fs::write(
            &conf,
            format!(
                "[ca]\ndefault_ca = test_ca\n[test_ca]\ndatabase = {db}/index.txt\n\
                 crlnumber = {db}/crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\n\
                 unique_subject = no\n",
                db = db.display()
            ),
        )
        .expect("write CRL config");
        let common = [
            "-config",
            path_str(&conf),
            "-cert",
            path_str(&self.pair.cert),
            "-keyfile",
            path_str(&self.pair.key),
        ];
        for pair in revoked {
            let mut args = vec!["ca", "-revoke", path_str(&pair.cert)];
            args.extend(common);
            openssl(&args);
        }
        let out = self.dir.join(format!("{name}.crl"));
        let mut args = vec!["ca", "-gencrl", "-out", path_str(&out)];
        args.extend(common);
        if let Some((last, next)) = dates {
            args.extend(["-crl_lastupdate", last, "-crl_nextupdate", next]);
        }
        openssl(&args);
        out
    }

    /// A TLS client certificate with a URI SAN (a SPIFFE id).
    pub fn client(&self, name: &str, cn: &str, uri: &str) -> Pair {
        self.leaf(name, cn, "clientAuth", &format!("URI:{uri}"))
    }

    /// A TLS client certificate with exactly these URI and DNS SANs and (optional) CN,
    /// whatever characters they hold: they go through an OpenSSL config with every special
    /// escaped, as a CA that signs what a CSR asks for would issue them.
    pub fn client_with_names(
        &self,
        name: &str,
        cn: Option<&str>,
        uris: &[&str],
        dns: &[&str],
    ) -> Pair {
        let pair = Pair {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        let esc = |v: &str| -> String {
            v.chars()
                .flat_map(|c| match c {
                    '"' | '\'' | '\\' | '$' | '#' => vec!['\\', c],
                    _ => vec![c],
                })
                .collect()
        };
        let csr_conf = self.dir.join(format!("{name}.req.cnf"));
        let dn = cn.map_or("O = Hokusai tests\n".to_string(), |cn| {
            format!("CN = {}\n", esc(cn))
        });
        std::fs::write(
            &csr_conf,
            format!("[req]\nprompt = no\ndistinguished_name = dn\n[dn]\n{dn}"),
        )
        .expect("write request config");
        let mut alt = String::new();
        for (i, uri) in uris.iter().enumerate() {
            alt.push_str(&format!("URI.{} = {}\n", i + 1, esc(uri)));
        }
        for (i, name) in dns.iter().enumerate() {
            alt.push_str(&format!("DNS.{} = {}\n", i + 1, esc(name)));
        }
        let san = if alt.is_empty() {
            ""
        } else {
            "subjectAltName = @alt\n"
        };
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "basicConstraints = critical, CA:FALSE\n\
                 keyUsage = critical, digitalSignature\n\
                 extendedKeyUsage = clientAuth\n\
                 authorityKeyIdentifier = keyid\n{san}[alt]\n{alt}"
            ),
        )
        .expect("write extensions file");
        new_key(&pair.key);
        let csr = self.dir.join(format!("{name}.csr"));
        openssl(&[
            "req",
            "-new",
            "-key",
            path_str(&pair.key),
            "-config",
            path_str(&csr_conf),
            "-out",
            path_str(&csr),
        ]);
        self.sign(&csr, &ext, &pair.cert);
        pair
    }

    fn sign(&self, csr: &Path, ext: &Path, cert: &Path) {
        openssl(&[
            "x509",
            "-req",
            "-in",
            path_str(csr),
            "-CA",
            path_str(&self.pair.cert),
            "-CAkey",
            path_str(&self.pair.key),
            "-set_serial",
            &serial(),
            "-days",
            "2",
            "-sha256",
            "-extfile",
            path_str(ext),
            "-out",
            path_str(cert),
        ]);
    }

    /// A leaf with this extendedKeyUsage and subjectAltName (OpenSSL syntax).
    pub fn leaf(&self, name: &str, cn: &str, eku: &str, san: &str) -> Pair {
        let pair = Pair {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        let csr = self.dir.join(format!("{name}.csr"));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "basicConstraints = critical, CA:FALSE\n\
                 keyUsage = critical, digitalSignature\n\
                 extendedKeyUsage = {eku}\n\
                 subjectAltName = {san}\n\
                 authorityKeyIdentifier = keyid\n"
            ),
        )
        .expect("write extensions file");
        new_key(&pair.key);
        openssl(&[
            "req",
            "-new",
            "-key",
            path_str(&pair.key),
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            path_str(&csr),
        ]);
        self.sign(&csr, &ext, &pair.cert);
        pair
    }
}

/// Serial number (hex) and subject of a DER certificate, for messages and assertions.
pub fn serial_and_subject(der: &[u8]) -> (String, String) {
    let cert = x509_cert::Certificate::from_der(der).expect("a DER X.509 certificate");
    let tbs = cert.tbs_certificate();
    let serial = tbs
        .serial_number()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    (serial, tbs.subject().to_string())
}

/// The first certificate of a PEM text, as DER.
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .skip_while(|l| l.trim() != "-----BEGIN CERTIFICATE-----")
        .skip(1)
        .take_while(|l| l.trim() != "-----END CERTIFICATE-----")
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .expect("base64 in a PEM certificate")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn new_key(path: &Path) {
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path_str(path),
    ]);
}

/// Distinct within a run and between runs: time and a counter.
fn serial() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("0x{:x}{:04x}", nanos, N.fetch_add(1, Ordering::Relaxed))
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (the tests need the openssl CLI, as `make certs` does)");
    assert!(
        out.status.success(),
        "openssl {} failed:\n{}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&out.stderr)
    );
}
