//! Which access an MLflow call needs: `read` or `write`, looked up by endpoint in an explicit
//! table of what MLflow 3.17 serves ([`endpoint_table`]), never guessed from a path's words.
//!
//! How a request is matched:
//! - the query and fragment are dropped; nothing is percent-decoded or case-folded, so an
//!   unusual spelling of an endpoint is simply not in the table;
//! - the path must start with one of the route prefixes Envoy forwards (none, `/api/mlflow`,
//!   `/mlflow`), then an API root (`/api/` or `/ajax-api/`), or just `/` for the few routes of
//!   MLflow's web UI (its shell, `static-files`, `get-artifact`, `graphql`), and what follows
//!   must match a table pattern as a whole, segment by segment;
//! - a path parameter (an artifact path, a run or trace id, a tag key) is a wildcard whose
//!   content never decides: an artifact called `get_model.pkl` is just an artifact;
//! - `HEAD` is looked up as `GET`; a method MLflow does not route (OPTIONS, lower case, ...)
//!   matches nothing;
//! - when several entries match, the call is a read only if every one says read;
//! - anything unmatched, or longer than [`MAX_PATH`], is a write; a path crafted so that a
//!   wildcard match would take more than [`MATCH_STEPS`] steps is judged toward write.
//!
//! On `mlflow-artifacts` routes only `GET`/`HEAD` can be reads, whatever the table says.
//!
//! Why a read cannot be smuggled past the table by encoding: every read sent with a method
//! other than GET is a literal pattern, so it matches only its exact spelling; and a GET
//! read keeps the literal segments in front of its first wildcard, so whatever MLflow
//! decodes inside the wildcard it stays in a family whose GET entries are all reads.

mod endpoints;

use crate::core::config::ScopeSets;

/// The table as written, one entry per (pattern, method), grouped by MLflow service.
pub fn endpoint_table() -> &'static [Endpoint] {
    endpoints::ENDPOINTS
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The methods MLflow routes on its API (`HEAD` is served wherever `GET` is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// Exact, case-sensitive, as MLflow's routers compare it; `HEAD` reads like `GET`.
    pub fn parse(method: &str) -> Option<Method> {
        match method {
            "GET" | "HEAD" => Some(Method::Get),
            "POST" => Some(Method::Post),
            "PUT" => Some(Method::Put),
            "PATCH" => Some(Method::Patch),
            "DELETE" => Some(Method::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// Under which API root MLflow serves an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// `/api/` and `/ajax-api/`.
    Both,
    /// `/ajax-api/` only (routes MLflow keeps for its web UI).
    Ajax,
    /// `/api/` only.
    Api,
    /// Right below the route prefix, outside both API roots: the web UI's own routes.
    Ui,
}

impl Roots {
    pub fn includes(self, root: Root) -> bool {
        matches!(
            (self, root),
            (Roots::Both, Root::Api | Root::Ajax)
                | (Roots::Ajax, Root::Ajax)
                | (Roots::Api, Root::Api)
                | (Roots::Ui, Root::Ui)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Api,
    Ajax,
    /// No API root: the pattern follows the route prefix's `/` (the UI shell is `""`).
    Ui,
}

impl Root {
    pub fn as_str(self) -> &'static str {
        match self {
            Root::Api => "/api/",
            Root::Ajax => "/ajax-api/",
            Root::Ui => "/",
        }
    }
}

/// One row of the table: `pattern` is the path after the API root, segments split on `/`;
/// `{}` stands for exactly one segment, `{*}` for one or more (a Flask `<path:...>` or a
/// FastAPI `{...:path}` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub roots: Roots,
    pub method: Method,
    pub pattern: &'static str,
    pub access: Access,
    /// Bytes of `pattern` before its first wildcard: a cheap first test.
    literal_len: usize,
}

impl Endpoint {
    pub const fn new(roots: Roots, method: Method, pattern: &'static str, access: Access) -> Self {
        let bytes = pattern.as_bytes();
        let mut literal_len = 0;
        while literal_len < bytes.len() && bytes[literal_len] != b'{' {
            literal_len += 1;
        }
        Endpoint {
            roots,
            method,
            pattern,
            access,
            literal_len,
        }
    }

    pub const fn has_wildcard(&self) -> bool {
        self.literal_len < self.pattern.len()
    }

    /// Does the endpoint path (after the API root) fit this entry's pattern?
    pub fn fits(&self, endpoint: &str) -> bool {
        if self.literal_len == self.pattern.len() {
            return endpoint == self.pattern;
        }
        // Patterns are ASCII and a wildcard is a whole segment, so the literal part ends at
        // a segment boundary of both strings and matching resumes there.
        // Past the step budget it errs toward write: a write entry fits, a read one does not.
        let lit = self.literal_len;
        endpoint
            .as_bytes()
            .starts_with(&self.pattern.as_bytes()[..lit])
            && fits(&self.pattern[lit..], &endpoint[lit..]).unwrap_or(self.access == Access::Write)
    }
}

/// Envoy's routes forward these prefixes to MLflow (the last two with the prefix stripped).
pub const ROUTE_PREFIXES: [&str; 3] = ["", "/api/mlflow", "/mlflow"];
const ROOTS: [Root; 3] = [Root::Api, Root::Ajax, Root::Ui];
/// Longer paths are not classified (so: write). Linux's PATH_MAX bounds any artifact path a
/// local store can hold, and the bound keeps the wildcard matcher's work small.
pub const MAX_PATH: usize = 4096;

/// Work bound for one wildcard match; real paths need a few dozen steps at most.
pub const MATCH_STEPS: usize = 256;

const ARTIFACTS: &str = "2.0/mlflow-artifacts/";

/// The access a request needs; anything the table does not classify is a write.
pub fn required_access(method: &str, path: &str) -> Access {
    match lookup(method, path) {
        Some(Access::Read) => Access::Read,
        _ => Access::Write,
    }
}

/// What the table says about a request: `None` when no entry matches.
pub fn lookup(method: &str, path: &str) -> Option<Access> {
    let method = Method::parse(method)?;
    let path = match path.bytes().position(|b| b == b'?' || b == b'#') {
        Some(end) => &path[..end],
        None => path,
    };
    if path.len() > MAX_PATH {
        return None;
    }
    let mut verdict = None;
    for prefix in ROUTE_PREFIXES {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        for root in ROOTS {
            let Some(endpoint) = rest.strip_prefix(root.as_str()) else {
                continue;
            };
            // The UI's few routes begin with a literal segment, never `api/` or `ajax-api/`
            // (`tests::no_ui_route_reaches_into_the_api_roots`): an API path is no UI path,
            // and skipping that reading spares a scan of every wildcard entry.
            if root == Root::Ui
                && (endpoint.starts_with("api/") || endpoint.starts_with("ajax-api/"))
            {
                continue;
            }
            match classify(root, method, endpoint) {
                Some(Access::Write) => return Some(Access::Write),
                Some(Access::Read) => verdict = Some(Access::Read),
                None => {}
            }
        }
    }
    verdict
}

/// One reading of the path: `endpoint` is what follows `root`.
///
/// A path that is exactly a literal entry takes that entry's verdict at once: the table
/// holds no wildcard entry that fits a literal pattern with another access
/// (`tests::a_literal_match_is_never_overruled` checks every one), so scanning the wildcard
/// entries could not change it. That is the common case (`experiments/get`,
/// `runs/search`, ...), and it costs one binary search.
fn classify(root: Root, method: Method, endpoint: &str) -> Option<Access> {
    let (literal, _) = candidates(method);
    let exact = literal
        .binary_search_by(|e| e.pattern.cmp(endpoint))
        .ok()
        .map(|at| &literal[at])
        .filter(|e| e.roots.includes(root));
    if let Some(entry) = exact {
        return Some(guard_artifacts(method, endpoint, entry.access));
    }
    classify_by_scan(root, method, endpoint)
}

/// The full rule: every matching entry (literal and wildcard) must say read.
fn classify_by_scan(root: Root, method: Method, endpoint: &str) -> Option<Access> {
    let (literal, wild) = candidates(method);
    // At most one literal entry per (method, pattern): a binary search finds it.
    let mut verdict = literal
        .binary_search_by(|e| e.pattern.cmp(endpoint))
        .ok()
        .map(|at| &literal[at])
        .filter(|e| e.roots.includes(root))
        .map(|e| e.access);
    if verdict == Some(Access::Write) {
        return verdict;
    }
    for entry in wild {
        if entry.roots.includes(root) && entry.fits(endpoint) {
            if entry.access == Access::Write {
                return Some(Access::Write);
            }
            verdict = Some(Access::Read);
        }
    }
    verdict.map(|access| guard_artifacts(method, endpoint, access))
}

/// Uploads, deletes and multipart calls on the artifact API: never a read, whatever a row
/// says.
fn guard_artifacts(method: Method, endpoint: &str, access: Access) -> Access {
    if method != Method::Get && endpoint.starts_with(ARTIFACTS) {
        Access::Write
    } else {
        access
    }
}

/// The entries for `method`: literal patterns (sorted), then those with wildcards.
fn candidates(method: Method) -> (&'static [Endpoint], &'static [Endpoint]) {
    let [start, mid, end] = [0, 1, 2].map(|k| BOUNDS[rank_of(method, false) + k]);
    (&INDEX[start..mid], &INDEX[mid..end])
}

/// `BOUNDS[r]`: where entries of rank `r` start in [`INDEX`] (one past the last rank too).
static BOUNDS: [usize; RANKS + 1] = bounds(&INDEX);
// `Delete` is the last variant of `Method`.
const RANKS: usize = rank_of(Method::Delete, true) + 1;

const fn bounds(index: &[Endpoint]) -> [usize; RANKS + 1] {
    let mut out = [0; RANKS + 1];
    let mut r = 0;
    while r <= RANKS {
        let mut at = 0;
        while at < index.len() && rank(&index[at]) < r {
            at += 1;
        }
        out[r] = at;
        r += 1;
    }
    out
}

/// The table sorted at compile time by method, literal before wildcard, then pattern.
static INDEX: [Endpoint; endpoints::ENDPOINTS.len()] = sorted(endpoints::ENDPOINTS);

const fn rank_of(method: Method, wild: bool) -> usize {
    method as usize * 2 + wild as usize
}

const fn rank(e: &Endpoint) -> usize {
    rank_of(e.method, e.has_wildcard())
}

const fn before(a: &Endpoint, b: &Endpoint) -> bool {
    if rank(a) != rank(b) {
        return rank(a) < rank(b);
    }
    // Byte order, as `str::cmp` compares.
    let (a, b) = (a.pattern.as_bytes(), b.pattern.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

const fn sorted<const N: usize>(table: &[Endpoint]) -> [Endpoint; N] {
    let mut out = [table[0]; N];
    let mut i = 0;
    while i < N {
        out[i] = table[i];
        let mut j = i;
        while j > 0 && before(&out[j], &out[j - 1]) {
            let moved = out[j];
            out[j] = out[j - 1];
            out[j - 1] = moved;
            j -= 1;
        }
        i += 1;
    }
    out
}

/// Segment-wise match of `path` against `pattern` (see [`Endpoint`]). The classic
/// wildcard algorithm: on a mismatch only the most recent `{*}` needs to take one more
/// segment. Positions are byte offsets of a segment's start; nothing is allocated.
/// `None` when the match needs more than [`MATCH_STEPS`] steps (only a path crafted
/// against a pattern with a `{*}` inside can get there).
fn fits(pattern: &str, path: &str) -> Option<bool> {
    let (mut p, mut s) = (0, 0);
    // Where to resume after the last `{*}`: the pattern after it, the path after its span.
    let mut resume: Option<(usize, usize)> = None;
    for _ in 0..MATCH_STEPS {
        match (segment(pattern, p), segment(path, s)) {
            (None, None) => return Some(true),
            // A trailing `{*}` takes whatever is left.
            (Some(("{*}", next_p)), Some(_)) if next_p > pattern.len() => return Some(true),
            (Some(("{*}", next_p)), Some((_, next_s))) => {
                (p, s) = (next_p, next_s);
                resume = Some((p, s));
                continue;
            }
            (Some((want, next_p)), Some((got, next_s))) if want == "{}" || want == got => {
                (p, s) = (next_p, next_s);
                continue;
            }
            _ => {}
        }
        let Some((after_star, span_end)) = resume.as_mut() else {
            return Some(false);
        };
        let Some((_, longer)) = segment(path, *span_end) else {
            return Some(false);
        };
        *span_end = longer;
        (p, s) = (*after_star, longer);
    }
    None
}

/// The segment starting at byte `at` and where the next one starts; `None` past the end.
fn segment(s: &str, at: usize) -> Option<(&str, usize)> {
    let rest = s.get(at..)?;
    let len = rest.find('/').unwrap_or(rest.len());
    Some((&rest[..len], at + len + 1))
}

impl Access {
    pub fn accepted_scopes<'a>(&self, sets: &'a ScopeSets) -> &'a [String] {
        match self {
            Access::Read => &sets.read,
            Access::Write => &sets.write,
        }
    }

    /// The scope named in a 403 body: the first, canonical one of the configured set.
    pub fn canonical_scope<'a>(&self, sets: &'a ScopeSets) -> &'a str {
        self.accepted_scopes(sets)
            .first()
            .map_or("", String::as_str)
    }

    pub fn is_granted_by(&self, granted: &[String], sets: &ScopeSets) -> bool {
        let accepted = self.accepted_scopes(sets);
        granted.iter().any(|scope| accepted.contains(scope))
    }
}

#[cfg(test)]
mod tests;
