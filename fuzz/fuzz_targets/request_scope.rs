#![no_main]

//! `required_access` on any method and path.
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, String, String)| {
    let (method, path, suffix) = input;
    checks::request_scope(&method, &path, &suffix);
});
