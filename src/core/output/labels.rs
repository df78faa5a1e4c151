//! The words a decision is told in: the labels of its metrics, the values of the access
//! log, and the values of the `x-auth-path` and `x-auth-method` headers. One spelling each,
//! so a dashboard, a log query and MLflow see the same word.

/// Which way a request came in (the `path` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPath {
    Internal,
    External,
    Exempt,
}

/// Which credential decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    None,
    Mtls,
    ApiKey,
    Jwt,
}

/// The final decision (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    /// Allowed on a stale verdict while the auth service was failing.
    Stale,
    Status401,
    Status403,
    Status429,
    Status503,
}

/// Where the verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// No verdict was needed (exempt, internal, refused before any lookup).
    None,
    Hit,
    Miss,
    Stale,
}

/// Why a callout gave no usable verdict (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalloutFailure {
    Timeout,
    Reset,
    ServerError,
    BadReply,
    Dispatch,
}

impl AuthPath {
    pub const ALL: [AuthPath; 3] = [AuthPath::Internal, AuthPath::External, AuthPath::Exempt];

    pub fn label(self) -> &'static str {
        match self {
            AuthPath::Internal => "internal",
            AuthPath::External => "external",
            AuthPath::Exempt => "exempt",
        }
    }
}

impl AuthMethod {
    pub fn label(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Mtls => "mtls",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
        }
    }
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Allow,
        Outcome::Stale,
        Outcome::Status401,
        Outcome::Status403,
        Outcome::Status429,
        Outcome::Status503,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Stale => "stale",
            Outcome::Status401 => "401",
            Outcome::Status403 => "403",
            Outcome::Status429 => "429",
            Outcome::Status503 => "503",
        }
    }

    pub fn of_status(status: u16) -> Outcome {
        match status {
            401 => Outcome::Status401,
            403 => Outcome::Status403,
            429 => Outcome::Status429,
            _ => Outcome::Status503,
        }
    }
}

impl CacheUse {
    pub fn label(self) -> &'static str {
        match self {
            CacheUse::None => "none",
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Stale => "stale",
        }
    }
}

impl CalloutFailure {
    pub const ALL: [CalloutFailure; 5] = [
        CalloutFailure::Timeout,
        CalloutFailure::Reset,
        CalloutFailure::ServerError,
        CalloutFailure::BadReply,
        CalloutFailure::Dispatch,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CalloutFailure::Timeout => "timeout",
            CalloutFailure::Reset => "reset",
            CalloutFailure::ServerError => "5xx",
            CalloutFailure::BadReply => "bad_reply",
            CalloutFailure::Dispatch => "dispatch",
        }
    }
}

/// The labels of one decided request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub path: AuthPath,
    pub method: AuthMethod,
    pub outcome: Outcome,
    pub cache: CacheUse,
}
