//! On a booted node PID 1 loads the kernel modules containers need (overlay, veth,
//! bridge, netfilter) in the background so the role starts sooner; until they are in, the
//! marker `CONTAINER_MODULES_LOADING` exists. A container start waits for it to go,
//! bounded: a marker left by a crashed loader must not block containers forever (they
//! then start and fail, if they must, with the kernel's own error).
use std::path::Path;
use std::time::{Duration, Instant};

use plinth_protocol::agent::CONTAINER_MODULES_LOADING;

/// The longest a container start waits for the modules.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// Waits while `marker` exists, at most `limit`; `true` when it is gone.
pub fn wait_until_gone(marker: &Path, limit: Duration) -> bool {
    let started = Instant::now();
    let mut said = false;
    while marker.exists() {
        if started.elapsed() >= limit {
            tracing::warn!(marker = %marker.display(), "container modules still loading; starting anyway");
            return false;
        }
        if !said {
            tracing::info!("waiting for the node to load the container modules");
            said = true;
        }
        std::thread::sleep(POLL);
    }
    true
}

/// Waits for the node's background module load, when one runs.
pub fn wait_for_node() {
    wait_until_gone(Path::new(CONTAINER_MODULES_LOADING), WAIT_LIMIT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_while_the_marker_exists_and_gives_up_at_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("loading");
        assert!(wait_until_gone(&marker, Duration::from_secs(5)), "no marker, no wait");
        std::fs::write(&marker, b"").expect("marker");
        assert!(!wait_until_gone(&marker, Duration::from_millis(60)), "a stale marker stops waiting at the limit");
        let remover = {
            let marker = marker.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                std::fs::remove_file(marker).expect("remove marker");
            })
        };
        assert!(wait_until_gone(&marker, Duration::from_secs(10)), "the wait ends when the loader is done");
        remover.join().expect("remover");
    }
}
