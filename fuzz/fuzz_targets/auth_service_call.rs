#![no_main]

//! `call::validation_call` (and `client_ip`) on any credential header, source and ids.
use hokusai_auth_filter::core::config::CredentialTransport;
use hokusai_auth_filter_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    |input: (u8, bool, Vec<u8>, String, Option<String>, Option<String>)| {
        let (transport, jwt_callout, authorization, source, request_id, service_token) = input;
        let transport = match transport % 3 {
            0 => CredentialTransport::Body,
            1 => CredentialTransport::Bearer,
            _ => CredentialTransport::Both,
        };
        checks::auth_service_call(
            transport,
            jwt_callout,
            &authorization,
            &source,
            request_id.as_deref(),
            service_token.as_deref(),
        );
    }
);
