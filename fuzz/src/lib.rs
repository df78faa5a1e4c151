//! The checks the fuzz targets run: the very ones `tests/properties/main.rs` runs with proptest.

#[path = "../../tests/properties/checks.rs"]
pub mod checks;
#[path = "../../tests/properties/model.rs"]
pub mod model;

use arbitrary::{Arbitrary, Unstructured};
use model::{Profile, Scenario};
use std::fmt;

/// A scenario leaning to the policy, one request's decision ([`Profile::Policy`]), read with
/// `arbitrary`.
pub struct PolicyInput(pub Scenario);
/// A scenario leaning to the worker's state machine ([`Profile::Worker`]).
pub struct WorkerInput(pub Scenario);

impl<'a> Arbitrary<'a> for PolicyInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Scenario::generate(u, Profile::Policy).map(Self)
    }
}

impl<'a> Arbitrary<'a> for WorkerInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Scenario::generate(u, Profile::Worker).map(Self)
    }
}

impl fmt::Debug for PolicyInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for WorkerInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Line-based credential input (readable seeds): `A<value>` is an `authorization` header,
/// `K<value>` an `x-api-key` header; other lines are ignored.
pub fn credential_lines(data: &[u8]) -> (Vec<&[u8]>, Vec<&[u8]>) {
    let (mut auth, mut keys) = (Vec::new(), Vec::new());
    for line in data.split(|b| *b == b'\n') {
        match line.split_first() {
            Some((b'A', value)) => auth.push(value),
            Some((b'K', value)) => keys.push(value),
            _ => {}
        }
    }
    (auth, keys)
}

/// The status an auth-service input byte stands for: the common ones, no reply, or any.
pub fn reply_status(selector: u8, extra: [u8; 2]) -> Option<u16> {
    match selector {
        0 => None,
        1 => Some(200),
        2 => Some(401),
        3 => Some(403),
        4 => Some(429),
        5 => Some(500),
        6 => Some(503),
        _ => Some(u16::from_le_bytes(extra)),
    }
}
