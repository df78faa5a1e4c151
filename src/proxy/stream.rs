//! One HTTP stream: read its headers once, ask the worker, apply the answer ([`super::apply`]).
//! Requests that wait on a callout are decided when it settles, and the decision is applied in
//! their own context (Envoy defers the resulting continue or local reply until the VM call
//! returns).
//!
//! Every host call here can fail; a failure never forwards a request: it is refused with 503
//! (or, when not even a reply can be sent, reset).

use super::abi;
use super::apply::{apply_resolved, forward_now, refuse, refuse_unverdicted};
use super::host::{self, Envoy};
use super::registry::{Contexts, Stream};
use crate::core::auth_service::reply::{CalloutReply, MAX_REPLY_BYTES};
use crate::core::output::local_reply::LocalReply;
use crate::core::pairs::for_each_pair;
use crate::core::request::facts::RequestFacts;
use crate::core::worker::Step;

pub fn on_request_headers(c: &mut Contexts, id: u32) -> u32 {
    let Some(root) = c.streams.get(&id).map(|s| s.root) else {
        return refuse_unverdicted();
    };
    let Some(filter) = c.filter(root) else {
        log::error!("request refused: the filter has no valid configuration");
        return refuse_unverdicted();
    };
    let buffer = match host::request_header_pairs() {
        Ok(buffer) => buffer,
        Err(status) => {
            log::error!("request refused: its headers could not be read ({status:?})");
            return refuse_unverdicted();
        }
    };
    let Some(facts) = RequestFacts::from_pairs(&buffer) else {
        log::error!("request refused: unreadable request headers");
        return refuse_unverdicted();
    };
    // No verdict without its clean-up: a client's copy of a verdict header must be gone,
    // on every path (exempt ones and preflights too).
    for name in &facts.client_verdict_headers {
        if let Err(status) = host::remove_request_header(name) {
            log::error!("could not remove a client's verdict header ({status:?}); refusing");
            return refuse(&LocalReply::unavailable(), None, facts.request_id);
        }
    }
    #[cfg(feature = "testing")]
    if filter.trap_path.as_deref() == Some(facts.bare_path()) {
        log::warn!("testing.trap_path requested: trapping the VM on purpose");
        std::arch::wasm32::unreachable();
    }
    let now = match host::now_ms() {
        Ok(now) => now,
        Err(status) => {
            // Without a clock no verdict's age can be told.
            log::error!("no clock ({status:?}); refusing");
            return refuse(&LocalReply::unavailable(), None, facts.request_id);
        }
    };
    match filter.worker.on_request(id, &facts, now, &mut Envoy) {
        Step::Forward(forward) => forward_now(&forward, facts.request_id),
        Step::Refuse(refusal) => refuse(&refusal.reply, Some(&refusal.facts), facts.request_id),
        Step::Wait => {
            if let Some(stream) = c.streams.get_mut(&id) {
                stream.waiting = true;
            }
            abi::ACTION_PAUSE
        }
    }
}

pub fn hold_while_waiting(c: &mut Contexts, id: u32) -> u32 {
    match c.streams.get(&id) {
        Some(stream) if !stream.waiting => abi::ACTION_CONTINUE,
        _ => abi::ACTION_PAUSE,
    }
}

/// A callout's reply reached `context`: in Envoy always the root context, which makes every
/// callout; a stream's id is handled too, for a host that delivers there.
pub fn on_callout_reply(c: &mut Contexts, context: u32, token: u32, headers: usize, body: usize) {
    let (root, current) = match c.streams.get(&context) {
        Some(stream) => (stream.root, Some(context)),
        None if c.roots.contains_key(&context) => (context, None),
        None => return,
    };
    let Some(filter) = c.filter(root) else {
        return;
    };
    let raw = read_callout_reply(headers, body);
    let (head, reply_body) = raw
        .as_ref()
        .and_then(|(pairs, body)| Some((ReplyHead::read(pairs)?, body.as_slice())))
        .unwrap_or_default();
    let reply = CalloutReply {
        status: head.status,
        body: reply_body,
        retry_after: head.retry_after,
        from_upstream: head.from_upstream,
    };
    let Ok(now) = host::now_ms() else {
        // Nothing can be judged without a clock; the tick gives the flight up after its
        // deadline, and its waiters get 503.
        log::error!("no clock for a callout's reply; it is dropped");
        return;
    };
    let resolved = filter
        .worker
        .on_callout_reply(token, reply, now, &mut Envoy);
    apply_resolved(c, resolved, current);
}

/// The stream's context was deleted (finished, or reset by the client). Its callout, if it
/// started one, is not cancelled by Envoy: the worker keeps it until the reply.
pub fn gone(c: &mut Contexts, id: u32, stream: Stream) {
    if let Some(filter) = c.filter(stream.root) {
        filter.worker.on_stream_gone(id);
    }
}

/// What the filter reads of a reply's headers (the first of each, as Envoy's own lookups).
#[derive(Default)]
struct ReplyHead<'a> {
    status: Option<u16>,
    retry_after: Option<&'a [u8]>,
    /// `x-envoy-upstream-service-time`: the reply came from the auth service, not Envoy.
    from_upstream: bool,
}

impl<'a> ReplyHead<'a> {
    /// None for pairs that do not parse.
    fn read(pairs: &'a [u8]) -> Option<Self> {
        let mut head = ReplyHead::default();
        let (mut seen_status, mut seen_retry) = (false, false);
        for_each_pair(pairs, |name, value| match name {
            b":status" if !std::mem::replace(&mut seen_status, true) => {
                head.status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
            b"retry-after" if !std::mem::replace(&mut seen_retry, true) => {
                head.retry_after = Some(value)
            }
            b"x-envoy-upstream-service-time" => head.from_upstream = true,
            _ => {}
        })?;
        Some(head)
    }
}

/// The reply's header pairs (all in one host call) and its body; None when there is no
/// reply. After a timeout or reset Envoy has no reply maps at all, and asking for one is a
/// host error: only read what the host says exists. A reply that cannot be read is no reply.
fn read_callout_reply(headers: usize, body: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    if headers == 0 {
        return None;
    }
    let pairs = host::call_response_header_pairs().ok()?;
    // One byte past the cap, so an oversized reply is recognised, never buffered whole.
    let body = if body == 0 {
        Vec::new()
    } else {
        // Unreadable, or missing though Envoy announced it: a status with a body we cannot
        // see says nothing.
        host::buffer(abi::HTTP_CALL_RESPONSE_BODY, body.min(MAX_REPLY_BYTES + 1))
            .ok()
            .flatten()?
    };
    Some((pairs, body))
}
