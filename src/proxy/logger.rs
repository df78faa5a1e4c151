//! The `log` crate's records, sent to Envoy's log through `proxy_log`. Envoy's own level for
//! wasm decides what crosses the boundary, so a filtered line costs no host call.

use super::abi;
use super::host;

struct EnvoyLog;

static LOGGER: EnvoyLog = EnvoyLog;

/// Installs the logger (once per VM) and a panic hook that logs the panic at critical before
/// the VM traps, so a crash says why. No host call: Envoy refuses them during `_initialize`
/// (`restricted_callback`); the level follows Envoy's from the first configure on.
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        std::panic::set_hook(Box::new(|info| {
            let _ = host::log(abi::CRITICAL, &info.to_string());
        }));
    }
    log::set_max_level(log::LevelFilter::Info);
}

/// Takes Envoy's current level for wasm (asked on every configure).
pub fn follow_envoy() {
    let level = match host::log_level() {
        Ok(abi::TRACE) => log::LevelFilter::Trace,
        Ok(abi::DEBUG) => log::LevelFilter::Debug,
        Ok(abi::INFO) | Err(_) => log::LevelFilter::Info,
        Ok(abi::WARN) => log::LevelFilter::Warn,
        Ok(abi::ERROR) => log::LevelFilter::Error,
        Ok(_) => log::LevelFilter::Off,
    };
    log::set_max_level(level);
}

impl log::Log for EnvoyLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => abi::TRACE,
            log::Level::Debug => abi::DEBUG,
            log::Level::Info => abi::INFO,
            log::Level::Warn => abi::WARN,
            log::Level::Error => abi::ERROR,
        };
        // A log line that cannot be written is not worth failing a request for.
        let _ = host::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}
