//! The root context: configuration, once per plugin config and worker; the tick that flushes
//! metrics and looks after callouts; callouts it sent itself.

use super::host::{self, Envoy};
use super::http::{apply_resolved, callout_replied, HttpFilter};
use super::metrics::Metrics;
use crate::core::config::FilterConfig;
use crate::core::decision::Policy;
use crate::core::flow::{Worker, TICK_MS};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// What every HTTP context of this configuration (on this worker) shares.
pub struct Filter {
    pub worker: RefCell<Worker>,
    metrics: RefCell<Metrics>,
    #[cfg(feature = "testing")]
    pub trap_path: Option<String>,
}

#[derive(Default)]
pub struct FilterRoot {
    filter: Option<Rc<Filter>>,
}

impl Context for FilterRoot {
    /// Replies to callouts this root context sent again for a lost leader.
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _: usize,
    ) {
        if let Some(filter) = &self.filter {
            callout_replied(filter, token, num_headers, body_size, None);
        }
    }
}

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
        #[cfg(feature = "testing")]
        if let Some(path) = &config.testing.trap_path {
            log::warn!(
                "testing.trap_path is set: a request to {path} crashes the VM; a test build only"
            );
        }
        log::info!(
            "configured: auth cluster {}, service {}, {} allow-listed identities, cache ttl {}s",
            config.auth_cluster,
            config.service_id,
            config.internal.allowed_identities.len(),
            config.cache.ttl_s
        );
        #[cfg(feature = "testing")]
        let trap_path = config.testing.trap_path.clone();
        let metrics = Metrics::define(&config.internal.allowed_identities);
        let policy = Policy::new(config);
        if let Err(error) = policy.prepare(&Envoy) {
            log::error!("{error}");
            return false;
        }
        self.filter = Some(Rc::new(Filter {
            worker: RefCell::new(Worker::new(policy, service_token)),
            metrics: RefCell::new(metrics),
            #[cfg(feature = "testing")]
            trap_path,
        }));
        let _ = hostcalls::set_tick_period(Duration::from_millis(TICK_MS));
        true
    }

    fn on_tick(&mut self) {
        let Some(filter) = &self.filter else { return };
        let resolved = {
            let mut worker = filter.worker.borrow_mut();
            let resolved = worker.on_tick(host::now_ms(), &mut Envoy);
            let policy = &mut worker.policy;
            let changes = policy.peer_certs.take_changed();
            filter
                .metrics
                .borrow_mut()
                .flush(&mut policy.tally, changes);
            resolved
        };
        apply_resolved(&resolved, None);
        // Back to the usual period after a prompt tick for a lost callout.
        let _ = hostcalls::set_tick_period(Duration::from_millis(TICK_MS));
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always a context: the SDK panics on None. Unconfigured means fail closed.
        Some(Box::new(HttpFilter::new(self.filter.clone(), context_id)))
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
