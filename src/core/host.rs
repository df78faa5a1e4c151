//! The seam between the core and Envoy: everything the decision asks of its host, as traits
//! the adapter (`src/proxy/host.rs`) implements and [`fake::FakeEnvoy`] plays in tests. Each
//! method is one host call, so the core asks only when the answer matters.

pub mod fake;

/// A shared-data write the host refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Someone else wrote the key since we read it.
    CasMismatch,
    /// Anything else the host refused.
    Failed,
}

/// Envoy's shared data: a key-value store visible to every worker of one Envoy, with
/// compare-and-swap versions.
pub trait SharedStore {
    /// The value and its CAS version, or None when the key was never written.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes when `cas` is None or still current.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// What the decision may ask of Envoy while deciding, beyond the request headers.
pub trait RequestHost: SharedStore {
    /// `connection.mtls`: Envoy validated the client's certificate chain on this connection.
    fn peer_verified(&mut self) -> bool;
    /// `connection.sha256_peer_certificate_digest`: the hex SHA-256 of the certificate the
    /// peer presented on this connection, as Envoy computed it.
    fn peer_certificate_digest(&mut self) -> Option<Vec<u8>>;
    /// A value of the payload jwt_authn verified for this request, from Envoy's dynamic
    /// metadata (`metadata.filter_metadata.<namespace>.<payload_key>.<below...>`, serialized
    /// as Envoy serializes properties), never from a header. None when there is none, or
    /// Envoy cannot hand it over (a null).
    fn verified_jwt(
        &mut self,
        namespace: &str,
        payload_key: &str,
        below: &[&str],
    ) -> Option<Vec<u8>>;
}

/// Envoy's token for a callout.
pub type CalloutToken = u32;

/// A callout as Envoy is asked to make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    /// The Envoy cluster to call.
    pub cluster: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Envoy would not start a callout (unknown cluster, no async client, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchRefused;

/// What the worker needs from Envoy to run callouts.
pub trait CalloutHost: SharedStore {
    /// Starts a callout (Envoy makes it from the root context, whichever context is current).
    fn dispatch(
        &mut self,
        call: &Callout,
        timeout_ms: u64,
    ) -> Result<CalloutToken, DispatchRefused>;
}

/// ...and, inside a request, about the request.
pub trait StreamHost: RequestHost + CalloutHost {
    /// `source.address`, for the callout body.
    fn source_address(&mut self) -> String;
}
