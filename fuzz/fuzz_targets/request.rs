#![no_main]

//! `RequestFacts::read` on header pairs (the input is a pairs buffer, as Envoy hands it).
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(pairs) = checks::reference_pairs(data) {
        let owned: Vec<(Vec<u8>, Vec<u8>)> = pairs
            .iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        checks::request(&owned);
    }
});
