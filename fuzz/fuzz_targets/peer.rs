#![no_main]

//! `match_peer` on an XFCC (the input after its first byte) and an allow-list: the
//! project's own when the first byte is even, else the XFCC's first `;`-separated words.
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((first, header)) = data.split_first() else {
        return;
    };
    let allowed: Vec<String> = if first % 2 == 0 {
        [
            "spiffe://hokusai.internal/ns/development/sa/hokusai-api",
            "hokusai-api-client",
        ]
        .map(String::from)
        .to_vec()
    } else {
        header
            .split(|b| *b == b';' || *b == b'=')
            .take(4)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect()
    };
    checks::peer(header, &allowed);
});
