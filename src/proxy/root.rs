//! The root context: configuration, once per plugin config, shared by every request.

use super::http::HttpFilter;
use super::metrics::Metrics;
use crate::core::config::FilterConfig;
use crate::core::decision::Policy;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::rc::Rc;

/// What every HTTP context of this configuration shares.
pub struct Filter {
    pub policy: Policy,
    /// The auth service's own bearer token, read from the VM environment; never logged.
    pub service_token: Option<String>,
    pub metrics: Metrics,
}

#[derive(Default)]
pub struct FilterRoot {
    filter: Option<Rc<Filter>>,
}

impl Context for FilterRoot {}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Let Envoy's own log level for wasm decide what crosses the boundary.
        if let Ok(level) = hostcalls::get_log_level() {
            proxy_wasm::set_log_level(level);
        }
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match FilterConfig::parse(&raw) {
            Ok(config) => config,
            Err(error) => {
                log::error!("{error}");
                return false;
            }
        };
        let service_token = match read_service_token(&config) {
            Ok(token) => token,
            Err(error) => {
                log::error!("{error}");
                return false;
            }
        };
        log::info!(
            "configured: auth cluster {}, service {}, {} allow-listed identities, cache ttl {}s",
            config.auth_cluster,
            config.service_id,
            config.internal.allowed_identities.len(),
            config.cache.ttl_s
        );
        if let Some(path) = &config.testing.trap_path {
            log::warn!("testing.trap_path is set: a request to {path} crashes the VM; never use this in production");
        }
        self.filter = Some(Rc::new(Filter {
            policy: Policy::new(config),
            service_token,
            metrics: Metrics::define(),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always a context: the SDK panics on None. Unconfigured means fail closed.
        Some(Box::new(HttpFilter::new(self.filter.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn read_service_token(config: &FilterConfig) -> Result<Option<String>, String> {
    let Some(name) = &config.auth_service_token_env else {
        return Ok(None);
    };
    match std::env::var(name) {
        Ok(token) if token.bytes().all(|b| b.is_ascii_graphic()) && !token.is_empty() => {
            Ok(Some(token))
        }
        Ok(_) => Err(format!(
            "invalid plugin configuration: field `auth_service_token_env`: ${name} is not a usable bearer token"
        )),
        Err(_) => {
            log::warn!("${name} is not set in the VM (vm_config.environment_variables); calling the auth service without a service token");
            Ok(None)
        }
    }
}
