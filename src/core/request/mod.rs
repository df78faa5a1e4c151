//! What the request says: its facts (read once from the header map), the credential it
//! presents, and the access (read or write) its endpoint needs. Depends on the base,
//! `identity` (which headers are verdicts), `verdict` (a credential's digest) and `output`.

pub mod credential;
pub mod facts;
pub mod scope;
