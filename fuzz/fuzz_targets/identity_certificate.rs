#![no_main]

//! `PeerCertificate::from_der` on the input as DER, and the input inside a PEM in a `Cert=`.
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::identity_certificate(data));
