//! One worker's requests and callouts: the state machine behind the HTTP contexts.
//!
//! A request is *deciding* (in [`Worker::on_request`]), then either decided at once, or
//! *waiting*: on a callout it started, or on another request's callout for the same
//! credential (coalescing: one callout per credential per worker, however many requests
//! arrive while it is in flight). When the reply comes, [`Worker::on_callout_reply`] settles
//! it once and decides every waiting request, each with its own scope need; the adapter then
//! resumes each one in its own context.
//!
//! - **Callouts belong to the worker, not to a stream.** Envoy makes every callout from the
//!   plugin's root context (proxy-wasm-cpp-host's `http_call` takes the root of the current
//!   context), so a stream that goes away does not cancel the callout it started: Envoy
//!   keeps the request to the auth service open until it answers or times out, and delivers
//!   the reply to the root context. A flight therefore outlives its waiters: it holds its
//!   place under the cap while Envoy holds the connection, and its reply still settles the
//!   verdict into the cache for the next request with that credential.
//! - **In-flight cap**: at most `max_pending_callouts` callouts per worker, waiters or not;
//!   past it a new credential gets 503 (or a stale verdict) at once. So clients that hang up
//!   can never push more than the cap onto the auth service.
//! - **One retry** on a connect failure or reset (a reply without status that came back
//!   before the attempt's timeout), within the first attempt's deadline. Never on a timeout,
//!   never on an HTTP status.
//! - **A reply that never comes** (which Envoy should not allow: every call has a timeout) is
//!   given up on the tick after its deadline plus a grace, so no flight lives for ever.

use super::auth_service::call::client_ip;
use super::auth_service::reply::{interpret, CalloutReply, NoReply, ValidationOutcome};
use super::config::FilterConfig;
use super::host::{Callout, CalloutHost, CalloutToken, DispatchRefused, SharedStore, StreamHost};
use super::output::json_writer;
use super::output::labels::{AuthMethod, CalloutFailure, Outcome};
use super::output::tally::Tally;
use super::policy::{Decision, Final, Forward, Pending, Policy, Refusal, Settled};
use super::request::facts::RequestFacts;
use super::request::scope::Access;
use super::verdict::digest::KeyDigest;
use std::collections::HashMap;

/// Envoy's id for a stream's context (not its `x-request-id`, which the client may choose).
pub type StreamId = u32;

/// How often the adapter should call [`Worker::on_tick`]: metrics reach Envoy this often,
/// and an overdue reply is given up within this of its grace. Idle, Envoy 1.40 with two
/// workers spent 1.5-2.5 ms of CPU per second on the filter at five ticks a second, and
/// about 1 ms at one: once a second is as fresh as any scrape needs.
pub const TICK_MS: u64 = 1000;
/// A retry needs at least this much of the deadline left to be worth sending.
const MIN_RETRY_MS: i64 = 20;
/// A reply with no response at all this close to the attempt's timeout is that timeout.
const TIMEOUT_SLACK_MS: i64 = 5;
/// Past its deadline by this much, a callout whose reply never came is given up.
const LOST_REPLY_GRACE_MS: i64 = 5_000;

/// See [`Worker::report`].
pub struct Report<'a> {
    pub tally: &'a Tally,
    pub latencies_ms: Vec<u64>,
    pub cert_changes: Vec<(String, i64)>,
}

/// What a request should do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Forward(Forward),
    Refuse(Refusal),
    /// Paused until a callout settles it.
    Wait,
}

/// A waiting request, decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved {
    pub stream: StreamId,
    /// Its `x-request-id`, for the reply.
    pub request_id: Option<String>,
    pub decision: Final,
}

type FlightKey = (AuthMethod, KeyDigest);

struct Waiter {
    stream: StreamId,
    access: Access,
    request_id: Option<String>,
}

struct Flight {
    pending: Pending,
    call: Callout,
    /// Envoy's token for the current attempt.
    token: CalloutToken,
    attempt_started_ms: i64,
    attempt_timeout_ms: i64,
    deadline_ms: i64,
    retried: bool,
    waiters: Vec<Waiter>,
}

impl Flight {
    /// What is left of the deadline, never more than `timeout_ms`: the clock is Envoy's wall
    /// clock, and a step back must not stretch a callout (the deadline is re-anchored).
    fn remaining_ms(&mut self, now_ms: i64, timeout_ms: i64) -> i64 {
        self.deadline_ms = self.deadline_ms.min(now_ms + timeout_ms);
        self.deadline_ms - now_ms
    }
}

pub struct Worker {
    policy: Policy,
    /// The auth service's own bearer token, from the VM environment; never logged.
    service_token: Option<String>,
    flights: HashMap<FlightKey, Flight>,
    tokens: HashMap<CalloutToken, FlightKey>,
    waiting: HashMap<StreamId, FlightKey>,
}

fn flight_key(pending: &Pending) -> FlightKey {
    (pending.method(), pending.digest)
}

impl Worker {
    pub fn new(config: FilterConfig, service_token: Option<String>) -> Self {
        Self {
            policy: Policy::new(config),
            service_token,
            flights: HashMap::new(),
            tokens: HashMap::new(),
            waiting: HashMap::new(),
        }
    }

    /// Shared state that must exist before the first request: the rate counters' slots.
    /// The adapter calls it when the VM is configured; an error refuses the configuration.
    pub fn prepare<S: SharedStore>(&self, store: &S) -> Result<(), String> {
        self.policy.prepare(store)
    }

    /// Callouts this worker has in flight, whether anyone still waits on them or not.
    pub fn callouts_in_flight(&self) -> usize {
        self.flights.len()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The counts so far (the adapter takes them with [`Self::report`]).
    pub fn tally(&self) -> &Tally {
        &self.policy.tally
    }

    /// What the adapter tells Envoy on a tick: the counts so far, the callout latencies
    /// since the last report, and the certificate expiries that changed.
    pub fn report(&mut self) -> Report<'_> {
        let policy = &mut self.policy;
        Report {
            cert_changes: policy.cert_expiry.take_changed(),
            latencies_ms: std::mem::take(&mut policy.tally.latencies_ms),
            tally: &policy.tally,
        }
    }

    pub fn on_request<H: StreamHost>(
        &mut self,
        stream: StreamId,
        facts: &RequestFacts,
        now_ms: i64,
        host: &mut H,
    ) -> Step {
        let now = now_ms.div_euclid(1000);
        match self.policy.decide(facts, host, now) {
            Decision::Forward(f) => self.finish(facts.request_id, Final::Forward(f)).into(),
            Decision::Refuse(r) => self.finish(facts.request_id, Final::Refuse(r)).into(),
            Decision::Validate(pending) => {
                self.join_or_send(stream, facts.request_id, pending, now_ms, host)
            }
        }
    }

    fn join_or_send<H: StreamHost>(
        &mut self,
        stream: StreamId,
        request_id: Option<&str>,
        pending: Pending,
        now_ms: i64,
        host: &mut H,
    ) -> Step {
        let key = flight_key(&pending);
        let waiter = Waiter {
            stream,
            access: pending.access,
            request_id: request_id.map(String::from),
        };
        if let Some(flight) = self.flights.get_mut(&key) {
            flight.waiters.push(waiter);
            self.waiting.insert(stream, key);
            self.policy.tally.coalesced += 1;
            return Step::Wait;
        }
        let now = now_ms.div_euclid(1000);
        let max = self.policy.config().max_pending_callouts as usize;
        if self.flights.len() >= max {
            self.policy.tally.callout_cap_rejections += 1;
            log::warn!("{max} callouts already in flight on this worker; refusing a new one");
            let reason = "too many callouts in flight";
            return self.without_callout(&pending, reason, request_id, host, now);
        }
        let source = host.source_address();
        let call = self.policy.validation_call(
            &pending,
            client_ip(&source),
            request_id,
            self.service_token.as_deref(),
        );
        let timeout_ms = self.policy.config().timeout_ms as i64;
        self.policy.tally.callouts += 1;
        match host.dispatch(&call, timeout_ms as u64) {
            Ok(token) => {
                // A token Envoy issues again (its counter wrapped) while an old flight still
                // holds it now means this call: the old flight is given up on the tick after
                // its deadline, and never takes this call's reply.
                self.tokens.insert(token, key);
                self.waiting.insert(stream, key);
                self.flights.insert(
                    key,
                    Flight {
                        pending,
                        call,
                        token,
                        attempt_started_ms: now_ms,
                        attempt_timeout_ms: timeout_ms,
                        deadline_ms: now_ms + timeout_ms,
                        retried: false,
                        waiters: vec![waiter],
                    },
                );
                Step::Wait
            }
            Err(DispatchRefused) => {
                self.policy.tally.callout_failed(CalloutFailure::Dispatch);
                log::warn!(
                    "callout to {} not dispatched",
                    self.policy.config().auth_cluster
                );
                let reason = "callout could not be dispatched";
                self.without_callout(&pending, reason, request_id, host, now)
            }
        }
    }

    /// A request whose callout cannot be made, decided at once as if the auth service were
    /// down: on a stale allow verdict, or 503.
    fn without_callout<S: SharedStore>(
        &mut self,
        pending: &Pending,
        reason: &'static str,
        request_id: Option<&str>,
        store: &S,
        now: i64,
    ) -> Step {
        let outcome = ValidationOutcome::Unavailable(reason);
        let settled = self.policy.settle(pending, outcome, store, now);
        let decision = self
            .policy
            .conclude(&settled, pending, pending.access, store, now);
        self.finish(request_id, decision).into()
    }

    /// A callout came back (or failed). Returns every request it decided.
    pub fn on_callout_reply<H: CalloutHost>(
        &mut self,
        token: CalloutToken,
        reply: CalloutReply,
        now_ms: i64,
        host: &mut H,
    ) -> Vec<Resolved> {
        let Some(key) = self.tokens.remove(&token) else {
            return Vec::new();
        };
        let Some(flight) = self.flights.get_mut(&key) else {
            return Vec::new();
        };
        let elapsed = now_ms - flight.attempt_started_ms;
        self.policy.tally.latency(elapsed.max(0) as u64);
        let no_reply = match reply.status {
            None if elapsed + TIMEOUT_SLACK_MS >= flight.attempt_timeout_ms => {
                Some(NoReply::Timeout)
            }
            None => Some(NoReply::Reset),
            Some(_) => reply.envoys_own(),
        };
        let status = reply.status.filter(|_| no_reply.is_none());
        let mut failure = None;
        if let Some(no_reply) = no_reply {
            let timed_out = no_reply == NoReply::Timeout;
            let remaining = flight.remaining_ms(now_ms, self.policy.config().timeout_ms as i64);
            if !timed_out && !flight.retried && remaining >= MIN_RETRY_MS {
                flight.retried = true;
                self.policy.tally.callout_retries += 1;
                self.policy.tally.callouts += 1;
                if let Ok(token) = host.dispatch(&flight.call, remaining as u64) {
                    flight.token = token;
                    flight.attempt_started_ms = now_ms;
                    flight.attempt_timeout_ms = remaining;
                    self.tokens.insert(token, key);
                    return Vec::new();
                }
                self.policy.tally.callout_failed(CalloutFailure::Dispatch);
            }
            failure = Some(if timed_out {
                CalloutFailure::Timeout
            } else {
                CalloutFailure::Reset
            });
        }
        let now = now_ms.div_euclid(1000);
        let service_id = &self.policy.config().service_id;
        let outcome = interpret(status, reply.body, reply.retry_after, now, service_id);
        let failure = failure.or(match (&outcome, status) {
            (ValidationOutcome::Unavailable(_), Some(500..=599)) => {
                Some(CalloutFailure::ServerError)
            }
            (ValidationOutcome::Unavailable(_), _) => Some(CalloutFailure::BadReply),
            _ => None,
        });
        if let Some(failure) = failure {
            self.policy.tally.callout_failed(failure);
        }
        self.settle_flight(key, outcome, now, host)
    }

    /// Settles a flight's outcome and decides everyone who waited on it.
    fn settle_flight<S: SharedStore>(
        &mut self,
        key: FlightKey,
        outcome: ValidationOutcome,
        now: i64,
        store: &S,
    ) -> Vec<Resolved> {
        let Some(flight) = self.flights.remove(&key) else {
            return Vec::new();
        };
        if self.tokens.get(&flight.token) == Some(&key) {
            self.tokens.remove(&flight.token);
        }
        let settled: Settled = self.policy.settle(&flight.pending, outcome, store, now);
        if flight.waiters.is_empty() {
            self.policy.tally.callouts_abandoned += 1;
        }
        let mut resolved = Vec::with_capacity(flight.waiters.len());
        for waiter in flight.waiters {
            self.waiting.remove(&waiter.stream);
            let decision =
                self.policy
                    .conclude(&settled, &flight.pending, waiter.access, store, now);
            let decision = self.finish(waiter.request_id.as_deref(), decision);
            resolved.push(Resolved {
                stream: waiter.stream,
                request_id: waiter.request_id,
                decision,
            });
        }
        resolved
    }

    /// A stream went away (finished, or reset by the client): it waits no more. Its callout,
    /// if it started one, goes on (Envoy does not cancel it) and settles for whoever is left,
    /// or for the cache alone.
    pub fn on_stream_gone(&mut self, stream: StreamId) {
        let Some(key) = self.waiting.remove(&stream) else {
            return;
        };
        if let Some(flight) = self.flights.get_mut(&key) {
            flight.waiters.retain(|w| w.stream != stream);
        }
    }

    /// Gives up on callouts whose reply is long overdue. Returns the requests decided.
    pub fn on_tick<S: SharedStore>(&mut self, now_ms: i64, store: &S) -> Vec<Resolved> {
        let now = now_ms.div_euclid(1000);
        let timeout_ms = self.policy.config().timeout_ms as i64;
        let mut given_up = Vec::new();
        for (key, flight) in self.flights.iter_mut() {
            // Re-anchored first, so a wall-clock step back cannot keep a flight for longer.
            let remaining = flight.remaining_ms(now_ms, timeout_ms);
            if remaining < -LOST_REPLY_GRACE_MS {
                log::warn!("a callout's reply never came; giving up on it");
                self.policy.tally.callout_failed(CalloutFailure::Timeout);
                given_up.push(*key);
            }
        }
        let mut resolved = Vec::new();
        for key in given_up {
            let outcome = ValidationOutcome::Unavailable("callout lost");
            resolved.extend(self.settle_flight(key, outcome, now, store));
        }
        resolved
    }

    /// Counts a final decision, and logs it once if it is a denial.
    fn finish(&mut self, request_id: Option<&str>, decision: Final) -> Final {
        let facts = *decision.facts();
        self.policy.tally.decided(&facts);
        if let Final::Refuse(refusal) = &decision {
            let key = refusal
                .key
                .map_or_else(|| "-".to_string(), |d| d.fingerprint());
            let level = if facts.outcome == Outcome::Status503 {
                log::Level::Warn
            } else {
                log::Level::Info
            };
            // The request id is the client's (preserve_external_request_id): quoted, so it
            // can never pose as another field of this line.
            log::log!(
                level,
                "denied {} request_id={} reason=\"{}\" path={} method={} key={}",
                refusal.reply.status,
                request_id.map_or_else(|| "-".to_string(), json_writer::quoted),
                refusal.reason,
                facts.path.label(),
                facts.method.label(),
                key
            );
        }
        decision
    }
}

impl From<Final> for Step {
    fn from(f: Final) -> Self {
        match f {
            Final::Forward(f) => Step::Forward(f),
            Final::Refuse(r) => Step::Refuse(r),
        }
    }
}

#[cfg(test)]
mod tests;
