//! The agent's end of the executors' notify socket (`executor_contract::NOTIFY_SOCKET`):
//! a unix datagram socket in the work dir (which tasks cannot see) on which executors
//! say "this task wrote a new record". The agent's tick loop wakes on it, so a task that
//! starts or ends is reported at once rather than on the next tick. Datagrams carry no
//! state of their own: the tick reads the records, so a lost, stale or forged datagram
//! costs at most one extra tick.
use std::path::Path;

use tokio::net::UnixDatagram;
use tracing::{debug, warn};

use crate::executor_contract::NOTIFY_SOCKET;

/// The longest path a unix socket address holds (`sun_path`, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

pub struct ExecutorNews {
    socket: UnixDatagram,
}

/// Binds `WORK_DIR/executor-notify.sock` (replacing one a previous agent left); `None`
/// when that is impossible (a work dir path too long for a socket address): the agent
/// then only polls.
pub fn bind(work_dir: &Path) -> Option<ExecutorNews> {
    let path = work_dir.join(NOTIFY_SOCKET);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        debug!(path = %path.display(), "work dir path too long for the notify socket; polling executors only");
        return None;
    }
    let _ = std::fs::remove_file(&path);
    match UnixDatagram::bind(&path) {
        Ok(socket) => Some(ExecutorNews { socket }),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot bind the executors' notify socket; polling only");
            None
        }
    }
}

impl ExecutorNews {
    /// Waits for news, then takes every datagram already queued (one tick serves a burst).
    pub async fn next(&self) {
        let mut buffer = [0u8; 512];
        if self.socket.recv(&mut buffer).await.is_err() {
            // A failing socket must not spin the loop: fall back to the interval.
            std::future::pending::<()>().await;
        }
        while self.socket.try_recv(&mut buffer).is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor_contract::notify_agent;
    use std::time::Duration;

    #[tokio::test]
    async fn an_executors_datagram_wakes_the_agent_and_a_burst_is_one_wake_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let news = bind(dir.path()).expect("bound");
        let socket = dir.path().join(NOTIFY_SOCKET);
        let quiet = tokio::time::timeout(Duration::from_millis(50), news.next()).await;
        assert!(quiet.is_err(), "no news, no wake-up");
        for task in ["a.1", "a.2", "a.3"] {
            notify_agent(Some(&socket), task);
        }
        tokio::time::timeout(Duration::from_secs(5), news.next()).await.expect("woken by the executor");
        let again = tokio::time::timeout(Duration::from_millis(50), news.next()).await;
        assert!(again.is_err(), "the burst was taken at once");
        // A second agent start replaces the socket a previous one left.
        drop(news);
        assert!(bind(dir.path()).is_some(), "a stale socket file is replaced");
    }

    #[test]
    fn a_work_dir_too_long_for_a_socket_means_polling_only() {
        let long = Path::new("/tmp").join("x".repeat(120));
        assert!(bind(&long).is_none());
    }
}
