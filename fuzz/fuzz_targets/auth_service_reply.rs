#![no_main]

//! `reply::interpret`: byte 0 picks the status (see `reply_status`, bytes 1-2
//! any status), byte 3 the retry-after (none, or that many of the following bytes), the rest
//! is the body.
use hokusai_auth_filter_fuzz::{checks, model::T0_MS, reply_status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [selector, a, b, retry, rest @ ..] = data else {
        return;
    };
    let status = reply_status(*selector, [*a, *b]);
    let (retry_after, body) = match retry {
        0 => (None, rest),
        n => {
            let n = usize::from(n % 8).min(rest.len());
            (Some(&rest[..n]), &rest[n..])
        }
    };
    checks::auth_service_reply(status, body, retry_after, T0_MS / 1000);
});
