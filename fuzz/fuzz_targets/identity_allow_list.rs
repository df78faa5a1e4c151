#![no_main]

//! `certificate::verified_certificate` and the allow-list match on an XFCC (the input after
//! its first byte). The connection's digest is that of the first `Cert=` field's DER when the
//! first byte is even (so a real certificate gets matched), else of the input itself; the
//! allow-list is the project's own plus the header's first `;`/`=`-separated words.
use hokusai_auth_filter::core::identity::xfcc;
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let Some((first, header)) = data.split_first() else {
        return;
    };
    let der = xfcc::cert_fields(header).next().and_then(xfcc::der_of);
    let digest: [u8; 32] = match (first % 2, der) {
        (0, Some(der)) => Sha256::digest(der).into(),
        _ => Sha256::digest(data).into(),
    };
    let mut allowed: Vec<String> = header
        .split(|b| *b == b';' || *b == b'=')
        .take(4)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    allowed.push("spiffe://hokusai.internal/ns/development/sa/hokusai-api".into());
    checks::identity_allow_list(header, &digest, &allowed);
});
