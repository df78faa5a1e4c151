#![no_main]

//! `jwt_claims::verified_claims` on the input as the pairs-serialized payload jwt_authn leaves
//! in Envoy's metadata, and on the input read as a JSON payload serialized that way.
use hokusai_auth_filter_fuzz::{checks, model};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::identity_jwt_claims(data);
    if let Some(pairs) = model::metadata_payload(data) {
        checks::identity_jwt_claims(&pairs);
    }
});
