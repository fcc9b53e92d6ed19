//! A connection (in http mode, a request) counted open on its backend until dropped, so
//! a retired backend's drain ends with its last one. Apart from `proxy.rs` so the HTTP
//! code (`exchange.rs`) can hold one without depending on the TCP proxy.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::Notify;

use super::stats::BackendStats;

/// A connection counted open on its backend until dropped.
pub(crate) struct Open {
    pub backend: Arc<BackendStats>,
    drained: Arc<Notify>,
}

impl Open {
    /// `drained` is the frontend's: told when a retired backend's last connection closes.
    pub fn new(backend: Arc<BackendStats>, drained: &Arc<Notify>) -> Self {
        backend.active.fetch_add(1, Ordering::Relaxed);
        Open { backend, drained: drained.clone() }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let left = self.backend.active.fetch_sub(1, Ordering::Relaxed) - 1;
        if left == 0 && self.backend.retired.load(Ordering::Relaxed) {
            self.drained.notify_one();
        }
    }
}
