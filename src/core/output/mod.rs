//! What leaves the filter, and how it is spelled: replies it makes itself, the identity
//! headers of a forwarded request, the access-log record, the labels and counts of its
//! metrics, and the one JSON writer they use. Depends on nothing else in the core.

pub mod access_log;
pub mod identity_headers;
pub mod json_writer;
pub mod labels;
pub mod local_reply;
pub mod tally;
