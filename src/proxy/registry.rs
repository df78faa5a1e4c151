//! The one registry the entry points share: each root context (one per plugin configuration
//! on this worker) with its filter, and each HTTP stream with the root it belongs to. It
//! holds only data; `root`, `stream` and `apply` act on it, `exports` owns the borrow.

use super::metrics::Metrics;
use crate::core::worker::Worker;
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Default)]
pub struct Contexts {
    pub roots: HashMap<u32, Root>,
    pub streams: HashMap<u32, Stream>,
}

/// What every stream of a root shares. None until configured: a stream of an unconfigured
/// root is refused.
#[derive(Default)]
pub struct Root {
    pub filter: Option<Filter>,
}

pub struct Filter {
    pub worker: Worker,
    pub metrics: Metrics,
    #[cfg(feature = "testing")]
    pub trap_path: Option<String>,
}

pub struct Stream {
    pub root: u32,
    /// Paused until a callout settles it: body and trailers must wait too.
    pub waiting: bool,
}

impl Stream {
    pub fn new(root: u32) -> Self {
        Self {
            root,
            waiting: false,
        }
    }
}

impl Contexts {
    /// The configured filter of `root`, if it has one.
    pub fn filter(&mut self, root: u32) -> Option<&mut Filter> {
        self.roots.get_mut(&root).and_then(|r| r.filter.as_mut())
    }
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
}

/// Runs `f` on the registry. No host call re-enters the VM's callbacks, so the registry is
/// never borrowed twice; should it be, `fallback` answers instead of a panic.
pub fn with<T>(fallback: impl FnOnce() -> T, f: impl FnOnce(&mut Contexts) -> T) -> T {
    CONTEXTS.with(|contexts| match contexts.try_borrow_mut() {
        Ok(mut contexts) => f(&mut contexts),
        Err(_) => {
            log::error!("context registry busy; answering the safe default");
            fallback()
        }
    })
}
