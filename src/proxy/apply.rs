//! Applying decisions: forwarding a request with its identity headers, or answering it
//! ourselves, in its own context or, for requests a callout settled, after switching Envoy's
//! effective context to each. A failure never forwards a request: it is refused with 503 (or,
//! when not even a reply can be sent, reset).

use super::abi;
use super::host;
use super::registry::Contexts;
use crate::core::output::access_log::access_log_record;
use crate::core::output::labels::Facts;
use crate::core::output::local_reply::LocalReply;
use crate::core::policy::{Final, Forward, Refusal};
use crate::core::worker::Resolved;

/// Applies decisions to the requests they belong to: `current` in place, every other one
/// after switching Envoy's effective context to it.
pub fn apply_resolved(c: &mut Contexts, resolved: Vec<Resolved>, current: Option<u32>) {
    let mut in_place = None;
    let mut switched = false;
    for r in resolved {
        if let Some(stream) = c.streams.get_mut(&r.stream) {
            stream.waiting = false;
        }
        if Some(r.stream) == current {
            in_place = Some(r);
            continue;
        }
        if host::set_effective_context(r.stream).is_err() {
            log::warn!("a waiting request is gone; its decision is dropped");
            continue;
        }
        switched = true;
        resume(&r.decision, r.request_id.as_deref());
    }
    if let (Some(id), true) = (current, switched) {
        let _ = host::set_effective_context(id);
    }
    if let Some(r) = in_place {
        resume(&r.decision, r.request_id.as_deref());
    }
}

/// A paused request's decision: forward (headers, then resume) or reply.
fn resume(decision: &Final, request_id: Option<&str>) {
    match decision {
        Final::Forward(forward) => {
            if forward_now(forward, request_id) == abi::ACTION_CONTINUE
                && host::continue_request().is_err()
            {
                log::error!("a decided request could not be resumed; refusing it");
                refuse(&LocalReply::unavailable(), None, request_id);
            }
        }
        Final::Refuse(Refusal { reply, facts, .. }) => {
            refuse(reply, Some(facts), request_id);
        }
    }
}

/// Writes the identity headers; Continue when every one of them is in place, else the
/// request is refused with 503 (Pause).
pub fn forward_now(forward: &Forward, request_id: Option<&str>) -> u32 {
    if let Some(identity) = &forward.identity {
        for (name, value) in identity.pairs() {
            if let Err(status) = host::set_request_header(name, value) {
                log::error!(
                    "could not set {name} ({status:?}); refusing rather than forwarding without it"
                );
                return refuse(&LocalReply::unavailable(), Some(&forward.facts), request_id);
            }
        }
    }
    record(access_log_record(&forward.facts, forward.identity.as_ref()));
    abi::ACTION_CONTINUE
}

/// Answers the client ourselves; Pause. When not even the reply can be sent, the request is
/// reset: it must never go on.
pub fn refuse(reply: &LocalReply, facts: Option<&Facts>, request_id: Option<&str>) -> u32 {
    if let Some(facts) = facts {
        record(access_log_record(facts, None));
    }
    let mut headers = reply.headers();
    if let Some(id) = request_id {
        headers.push(("x-request-id", id.to_string()));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    if let Err(status) = host::send_local_response(reply.status, &headers, &reply.body()) {
        log::error!("local reply failed ({status:?}); resetting the request");
        let _ = host::close_request();
    }
    abi::ACTION_PAUSE
}

/// 503 for a request the filter could not decide safely.
pub fn refuse_unverdicted() -> u32 {
    refuse(&LocalReply::unavailable(), None, None)
}

/// The verdict's non-secret facts, as filter state `wasm.hokusai_auth` for the access log.
/// Losing them loses a log field, not a security decision.
fn record(value: String) {
    if let Err(status) = host::set_property("hokusai_auth", value.as_bytes()) {
        log::warn!("the verdict's facts could not be recorded for the access log ({status:?})");
    }
}
