//! The access log's view of a decision: a one-line JSON object of its labels and non-secret
//! identity facts, which the adapter hands Envoy as filter state (`wasm.hokusai_auth`).
//! Never a credential; key ids and user ids are the auth service's names for them.

use super::identity_headers::IdentityHeaders;
use super::json_writer;
use super::labels::Facts;
use std::rc::Rc;

/// The record of one decision: its labels, then the identity facts of its headers, if any.
pub fn access_log_record(facts: &Facts, identity: Option<&IdentityHeaders>) -> String {
    let fields = identity.map_or("", |i| &*i.log_fields);
    // The labels are fixed ASCII words: nothing in them needs escaping.
    let mut out = String::with_capacity(80 + fields.len());
    for (name, label) in [
        ("{\"path\":\"", facts.path.label()),
        ("\",\"method\":\"", facts.method.label()),
        ("\",\"outcome\":\"", facts.outcome.label()),
        ("\",\"cache\":\"", facts.cache.label()),
    ] {
        out.push_str(name);
        out.push_str(label);
    }
    out.push('"');
    out.push_str(fields);
    out.push('}');
    out
}

/// `,"name":"value"` for each present value, JSON-escaped: [`IdentityHeaders::log_fields`].
pub fn log_fields(fields: &[(&str, Option<&str>)]) -> Rc<str> {
    let mut out = String::new();
    for (name, value) in fields {
        if let Some(value) = value {
            out.push(',');
            json_writer::push_string(&mut out, name);
            out.push(':');
            json_writer::push_string(&mut out, value);
        }
    }
    out.into()
}
