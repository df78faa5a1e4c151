//! One HTTP stream: read its headers once, ask the worker, apply the answer. Requests that
//! wait on a callout are decided by [`crate::core::flow`] and applied here, in their own
//! context, when the callout settles.

use super::host::{self, Envoy};
use super::root::Filter;
use crate::core::decision::{access_log_record, Final, Forward, IdentityHeaders, Refusal};
use crate::core::flow::{CalloutReply, Resolved, Step};
use crate::core::local_reply::LocalReply;
use crate::core::request::RequestFacts;
use crate::core::telemetry::Facts;
use crate::core::validation_reply::MAX_REPLY_BYTES;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType};
use std::rc::Rc;

pub struct HttpFilter {
    filter: Option<Rc<Filter>>,
    id: u32,
    /// Paused until a callout settles it: body and trailers must wait too.
    waiting: bool,
}

impl HttpFilter {
    pub fn new(filter: Option<Rc<Filter>>, id: u32) -> Self {
        Self {
            filter,
            id,
            waiting: false,
        }
    }
}

impl Context for HttpFilter {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _: usize,
    ) {
        let Some(filter) = self.filter.clone() else {
            return;
        };
        if callout_replied(&filter, token, num_headers, body_size, Some(self.id)) {
            self.waiting = false;
        }
    }
}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let buffer = host::request_headers_buffer();
        let facts = buffer.as_deref().and_then(RequestFacts::from_pairs);
        let (Some(filter), Some(facts)) = (self.filter.clone(), facts) else {
            log::error!("request refused: no valid configuration, or unreadable request headers");
            return refuse_unverdicted(None);
        };
        // No verdict without its clean-up: a client's copy of a verdict header must be gone,
        // on every path (exempt ones and preflights too).
        for name in &facts.client_verdict_headers {
            if host::remove_request_header(name).is_err() {
                log::error!("could not remove a client's verdict header; refusing");
                return refuse_unverdicted(facts.request_id);
            }
        }
        #[cfg(feature = "testing")]
        if filter.trap_path.as_deref() == Some(facts.bare_path()) {
            log::warn!("testing.trap_path requested: trapping the VM on purpose");
            std::arch::wasm32::unreachable();
        }
        let step =
            filter
                .worker
                .borrow_mut()
                .on_request(self.id, &facts, host::now_ms(), &mut Envoy);
        match step {
            Step::Forward(forward) => forward_now(&forward, facts.request_id),
            Step::Refuse(refusal) => {
                refuse(&refusal, facts.request_id);
                Action::Pause
            }
            Step::Wait => {
                self.waiting = true;
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        // Envoy holds the body while headers are paused (it maps our pause to
        // StopAllIterationAndWatermark), but never rely on that: a body callback answered
        // with Continue would let a request through before its verdict.
        if self.waiting {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.waiting {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

impl Drop for HttpFilter {
    fn drop(&mut self) {
        let Some(filter) = &self.filter else { return };
        let Ok(mut worker) = filter.worker.try_borrow_mut() else {
            return;
        };
        worker.on_request_gone(self.id);
        if worker.needs_prompt_tick() {
            // A callout others wait on went with this stream: send it again soon.
            let _ = hostcalls::set_tick_period(std::time::Duration::from_millis(1));
        }
    }
}

/// A callout's reply reached `current` (a stream, or None for the root context): read it,
/// let the worker settle it, apply every decision. True when `current` itself was decided.
pub(super) fn callout_replied(
    filter: &Filter,
    token: u32,
    num_headers: usize,
    body_size: usize,
    current: Option<u32>,
) -> bool {
    let (status, retry_after, body) = read_callout_reply(num_headers, body_size);
    let from_upstream = CalloutReply::may_be_envoys_own(status)
        && host::call_response_header("x-envoy-upstream-service-time").is_some();
    let reply = CalloutReply {
        status,
        body: &body,
        retry_after: retry_after.as_deref(),
        from_upstream,
    };
    let resolved =
        filter
            .worker
            .borrow_mut()
            .on_callout_reply(token, reply, host::now_ms(), &mut Envoy);
    apply_resolved(&resolved, current)
}

/// (status, retry-after, body). After a timeout or reset Envoy has no reply maps at all, and
/// asking for one is a host error: only read what the host says exists.
fn read_callout_reply(
    num_headers: usize,
    body_size: usize,
) -> (Option<u16>, Option<Vec<u8>>, Vec<u8>) {
    if num_headers == 0 {
        return (None, None, Vec::new());
    }
    let status = host::call_response_header(":status")
        .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok());
    let retry_after = host::call_response_header("retry-after");
    // Read one byte past the cap so an oversized reply is recognised, never buffered.
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(
            BufferType::HttpCallResponseBody,
            0,
            body_size.min(MAX_REPLY_BYTES + 1),
        )
        .ok()
        .flatten()
        .unwrap_or_default()
    };
    (status, retry_after, body)
}

/// Applies decisions to the requests they belong to: `current` in place, every other one
/// after switching Envoy's effective context to it (Envoy defers the resulting continue or
/// local reply until this VM call returns). True when `current` itself was decided.
pub fn apply_resolved(resolved: &[Resolved], current: Option<u32>) -> bool {
    let mut current_decided = None;
    for r in resolved {
        if Some(r.request) == current {
            current_decided = Some(r);
            continue;
        }
        if hostcalls::set_effective_context(r.request).is_err() {
            log::warn!("a waiting request is gone; its decision is dropped");
            continue;
        }
        resume(&r.decision, r.request_id.as_deref());
    }
    if let Some(id) = current {
        if resolved.iter().any(|r| r.request != id) {
            let _ = hostcalls::set_effective_context(id);
        }
    }
    if let Some(r) = current_decided {
        resume(&r.decision, r.request_id.as_deref());
    }
    current_decided.is_some()
}

/// A paused request's decision: forward (headers, then resume) or reply.
fn resume(decision: &Final, request_id: Option<&str>) {
    match decision {
        Final::Forward(forward) => {
            if forward_now(forward, request_id) == Action::Continue {
                let _ = hostcalls::resume_http_request();
            }
        }
        Final::Refuse(refusal) => refuse(refusal, request_id),
    }
}

/// Writes the identity headers; Continue when every one of them is in place, else the
/// request is refused with 503 (Pause).
fn forward_now(forward: &Forward, request_id: Option<&str>) -> Action {
    if let Some(identity) = &forward.identity {
        for (name, value) in identity.pairs() {
            if let Err(status) = host::set_request_header(name, value) {
                log::error!(
                    "could not set {name} ({status:?}); refusing rather than forwarding without it"
                );
                return refuse_unverdicted(request_id);
            }
        }
    }
    record_facts(&forward.facts, forward.identity.as_ref());
    Action::Continue
}

fn refuse(refusal: &Refusal, request_id: Option<&str>) {
    record_facts(&refusal.facts, None);
    send_reply(&refusal.reply, request_id);
}

/// 503 for a request the filter could not decide safely.
fn refuse_unverdicted(request_id: Option<&str>) -> Action {
    send_reply(&LocalReply::unavailable(), request_id);
    Action::Pause
}

fn send_reply(reply: &LocalReply, request_id: Option<&str>) {
    let mut headers = reply.headers();
    if let Some(id) = request_id {
        headers.push(("x-request-id", id.to_string()));
    }
    let headers = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    if let Err(status) =
        hostcalls::send_http_response(reply.status.into(), headers, Some(&reply.body()))
    {
        log::error!("local reply failed: {status:?}");
    }
}

/// The verdict's non-secret facts, as filter state `wasm.hokusai_auth` for the access log.
fn record_facts(facts: &Facts, identity: Option<&IdentityHeaders>) {
    let value = access_log_record(facts, identity);
    let _ = hostcalls::set_property(vec!["hokusai_auth"], Some(value.as_bytes()));
}
