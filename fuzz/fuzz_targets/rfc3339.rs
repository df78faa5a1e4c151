#![no_main]

//! `hokusai_rfc3339::parse` on any text, against a reference reading.
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        checks::rfc3339(text);
    }
});
