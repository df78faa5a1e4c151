//! One HTTP request: a small state machine. Deciding on headers, then either decided, or
//! waiting for its auth-service callout.

use super::host::{self, HostStore, RequestHeaders};
use super::root::Filter;
use crate::core::callout::client_ip;
use crate::core::decision::{Decision, Pending, RequestFacts};
use crate::core::local_reply::LocalReply;
use crate::core::peer::PeerFacts;
use crate::core::validation_reply::{interpret, ValidationOutcome, MAX_REPLY_BYTES};
use crate::core::VERDICT_HEADERS;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType};
use std::rc::Rc;
use std::time::Duration;

/// Where a request stands. Coalescing (see ROADMAP.md) will add "waiting on another
/// context's callout" here.
enum Phase {
    Deciding,
    AwaitingCallout(Pending),
    Decided,
}

pub struct HttpFilter {
    filter: Option<Rc<Filter>>,
    request_id: Option<String>,
    phase: Phase,
}

impl HttpFilter {
    pub fn new(filter: Option<Rc<Filter>>) -> Self {
        Self {
            filter,
            request_id: None,
            phase: Phase::Deciding,
        }
    }

    fn dispatch(&mut self, filter: &Filter, pending: Pending) -> Action {
        let config = filter.policy.config();
        let source = host::property_string(&["source", "address"]).unwrap_or_default();
        let call = filter.policy.validation_call(
            &pending,
            client_ip(&source),
            self.request_id.as_deref(),
            filter.service_token.as_deref(),
        );
        let headers = call.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let timeout = Duration::from_millis(config.timeout_ms);
        filter.metrics.callout();
        match hostcalls::dispatch_http_call(
            &config.auth_cluster,
            headers,
            Some(&call.body),
            Vec::new(),
            timeout,
        ) {
            Ok(_) => {
                self.phase = Phase::AwaitingCallout(pending);
                Action::Pause
            }
            Err(status) => {
                log::warn!(
                    "callout to {} not dispatched: {status:?}",
                    config.auth_cluster
                );
                let outcome = ValidationOutcome::Unavailable("callout could not be dispatched");
                let decision =
                    filter
                        .policy
                        .on_validation(&pending, outcome, &HostStore, host::now());
                self.apply(filter, decision, false)
            }
        }
    }

    /// Applies a final decision. `resume` is set when the request was paused on a callout.
    fn apply(&mut self, filter: &Filter, decision: Decision, resume: bool) -> Action {
        self.phase = Phase::Decided;
        match decision {
            Decision::Forward(forward) => {
                for (name, value) in &forward.headers {
                    host::set_request_header(name, Some(value));
                }
                filter.metrics.allowed(forward.route);
                if resume {
                    let _ = hostcalls::resume_http_request();
                }
                Action::Continue
            }
            Decision::Reply(reply) => {
                filter.metrics.denied(reply.status);
                self.reply(&reply);
                Action::Pause
            }
            // on_validation never asks for a second callout; treat it as an outage.
            Decision::Validate(_) => {
                self.reply(&LocalReply::unavailable());
                Action::Pause
            }
        }
    }

    fn reply(&self, reply: &LocalReply) {
        let mut headers = reply.headers();
        if let Some(id) = &self.request_id {
            headers.push(("x-request-id", id.clone()));
        }
        let headers = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        if let Err(status) =
            hostcalls::send_http_response(reply.status.into(), headers, Some(&reply.body()))
        {
            log::error!("local reply failed: {status:?}");
        }
    }
}

impl Context for HttpFilter {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        num_headers: usize,
        body_size: usize,
        _: usize,
    ) {
        let Phase::AwaitingCallout(pending) = std::mem::replace(&mut self.phase, Phase::Decided)
        else {
            return;
        };
        let Some(filter) = self.filter.clone() else {
            return;
        };
        // After a timeout or reset Envoy has no response maps at all, and asking for one
        // is a host error the SDK turns into a panic: only read what the host says exists.
        let headers_present = num_headers > 0;
        let header = |name| {
            headers_present
                .then(|| host::call_response_header(name))
                .flatten()
        };
        let status =
            header(":status").and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok());
        let retry_after = header("retry-after");
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
        let now = host::now();
        let outcome = interpret(status, &body, retry_after.as_deref(), now);
        let decision = filter
            .policy
            .on_validation(&pending, outcome, &HostStore, now);
        self.apply(&filter, decision, true);
    }
}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let headers = RequestHeaders::read();
        for name in VERDICT_HEADERS {
            if headers.get(name).is_some() {
                host::set_request_header(name, None);
            }
        }
        self.request_id = headers
            .get("x-request-id")
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(String::from);
        let Some(filter) = self.filter.clone() else {
            log::error!("request refused: the filter has no valid configuration");
            self.reply(&LocalReply::unavailable());
            return Action::Pause;
        };
        let text = |name| String::from_utf8_lossy(headers.get(name).unwrap_or_default());
        let facts = RequestFacts {
            method: &text(":method"),
            path: &text(":path"),
            authorization: headers.get("authorization"),
            x_api_key: headers.get("x-api-key"),
            cors_request_method: headers.get("access-control-request-method").is_some(),
            has_user_id: headers.get("x-user-id").is_some(),
            peer: read_peer(&headers),
        };
        let testing_trap = filter.policy.config().testing.trap_path.as_deref();
        if testing_trap.is_some_and(|trap| facts.path.split('?').next() == Some(trap)) {
            log::warn!("testing.trap_path requested: trapping the VM on purpose");
            std::arch::wasm32::unreachable();
        }
        match filter.policy.on_request(&facts, &HostStore, host::now()) {
            Decision::Validate(pending) => self.dispatch(&filter, pending),
            decision => self.apply(&filter, decision, false),
        }
    }
}

/// Peer facts; the certificate details are read only for a validated mTLS connection.
fn read_peer(headers: &RequestHeaders) -> PeerFacts {
    let mtls = host::property(&["connection", "mtls"]).is_some_and(|v| v.first() == Some(&1));
    if !mtls {
        return PeerFacts::default();
    }
    PeerFacts {
        mtls,
        uri_san: host::property_string(&["connection", "uri_san_peer_certificate"]),
        dns_san: host::property_string(&["connection", "dns_san_peer_certificate"]),
        subject: host::property_string(&["connection", "subject_peer_certificate"]),
        xfcc: headers.get("x-forwarded-client-cert").map(<[u8]>::to_vec),
    }
}
