//! A root context: the filter of one plugin configuration on this worker (its worker state
//! and metrics), configured once, ticking every [`TICK_MS`] to flush metrics and give up on
//! callouts whose reply is long overdue.

use super::abi;
use super::apply::apply_resolved;
use super::host::{self, Envoy};
use super::logger;
use super::metrics::Metrics;
use super::registry::{Contexts, Filter};
use crate::core::config::FilterConfig;
use crate::core::text::is_token;
use crate::core::worker::{Worker, TICK_MS};

/// A plugin configuration far larger than any real one is refused unread.
const MAX_CONFIGURATION_BYTES: usize = 1 << 20;

pub fn configure(c: &mut Contexts, root: u32, size: usize) -> bool {
    logger::follow_envoy();
    let Some(slot) = c.roots.get_mut(&root) else {
        log::error!("configure for an unknown root context");
        return false;
    };
    if size > MAX_CONFIGURATION_BYTES {
        log::error!("invalid plugin configuration: {size} bytes is more than any configuration");
        return false;
    }
    let raw = match host::buffer(abi::PLUGIN_CONFIGURATION, size) {
        Ok(raw) => raw.unwrap_or_default(),
        Err(status) => {
            log::error!("plugin configuration unreadable: {status:?}");
            return false;
        }
    };
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
    let worker = Worker::new(config, service_token);
    if let Err(error) = worker.prepare(&Envoy) {
        log::error!("{error}");
        return false;
    }
    if let Err(status) = host::set_tick_period_ms(TICK_MS as u32) {
        log::error!("no tick ({status:?}): callouts could not be looked after");
        return false;
    }
    slot.filter = Some(Filter {
        worker,
        metrics,
        #[cfg(feature = "testing")]
        trap_path,
    });
    true
}

pub fn tick(c: &mut Contexts, root: u32) {
    let Some(filter) = c.filter(root) else {
        return;
    };
    let Ok(now) = host::now_ms() else {
        log::warn!("no clock on this tick; callouts are looked after on the next");
        return;
    };
    let resolved = filter.worker.on_tick(now, &Envoy);
    filter.metrics.flush(&mut filter.worker);
    apply_resolved(c, resolved, None);
}

fn read_service_token(config: &FilterConfig) -> Result<Option<String>, String> {
    let Some(name) = &config.auth_service_token_env else {
        return Ok(None);
    };
    match std::env::var(name) {
        Ok(token) if is_token(token.as_bytes()) => {
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
