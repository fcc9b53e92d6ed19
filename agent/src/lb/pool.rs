//! Idle keep-alive connections to the backends of one http-mode frontend
//! (`pooled.rs` uses them; the frontend owns the pool and empties it when backends leave).
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use plinth_protocol::TaskId;

use super::exchange::Sender;
use super::stats::BackendStats;

/// Idle connections kept per backend; one more is closed.
const MAX_IDLE: usize = 256;
/// Idle keep-alive connections of one frontend, per backend.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<(TaskId, SocketAddr), Vec<Sender>>>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TaskId, SocketAddr), Vec<Sender>>> {
        self.idle.lock().expect("pool lock is never poisoned")
    }

    pub fn take(&self, backend: &BackendStats) -> Option<Sender> {
        self.lock().get_mut(&(backend.task_id.clone(), backend.addr))?.pop()
    }

    pub fn put(&self, backend: &BackendStats, sender: Sender) {
        let mut idle = self.lock();
        let kept = idle.entry((backend.task_id.clone(), backend.addr)).or_default();
        if kept.len() < MAX_IDLE {
            kept.push(sender);
        }
    }

    /// Closes a backend's idle connections (it left the table).
    pub fn forget(&self, backend: &BackendStats) {
        self.lock().remove(&(backend.task_id.clone(), backend.addr));
    }

    pub fn clear(&self) {
        self.lock().clear();
    }
}
