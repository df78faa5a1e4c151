#![no_main]

//! `jwt::claims`, on the input as a token and as the JSON payload of a token.
use base64::Engine;
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::jwt_claims(&String::from_utf8_lossy(data));
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data);
    checks::jwt_claims(&format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln"));
});
