//! The validation callout, both halves of one exchange: the [`call`] the filter makes and
//! the [`reply`] it reads, where anything not fully understood is no verdict. Depends on the
//! base, `output` (the JSON writer), `verdict` (what a reply means) and `request` (the
//! credential it carries).

pub mod call;
pub mod reply;
