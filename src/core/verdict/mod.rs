//! What the auth service said about a credential, and where the filter keeps it: shared
//! data for every worker ([`shared_cache`], in [`slot_codec`]'s bytes), this worker's
//! copies ([`local_copies`]), and the key's own rate counters. Everything is keyed by the
//! credential's [`digest`], never its text. Depends on the base and `output`.

pub mod digest;
pub mod local_copies;
pub mod rate_limit;
pub mod shared_cache;
pub mod slot_codec;
