//! Which backend a new connection tries first, and which next when a connect fails:
//! round robin from a rotating cursor, or least connections (ties in round-robin order).
use std::sync::Arc;

use plinth_protocol::agent::Balance;

use super::stats::BackendStats;

/// Every backend once, in the order to try them.
pub(crate) fn order(backends: &[Arc<BackendStats>], balance: Balance, cursor: usize) -> Vec<Arc<BackendStats>> {
    let n = backends.len();
    if n == 0 {
        return Vec::new();
    }
    let mut ordered: Vec<Arc<BackendStats>> = (0..n).map(|i| backends[(cursor + i) % n].clone()).collect();
    if balance == Balance::LeastConn {
        // Stable: equal loads keep the rotation, so idle backends still share the work.
        ordered.sort_by_key(|b| b.active());
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_protocol::TaskId;
    use std::sync::atomic::Ordering;

    fn backends(n: u16) -> Vec<Arc<BackendStats>> {
        (0..n)
            .map(|i| {
                Arc::new(BackendStats::new(TaskId::new(format!("t{i}")), format!("10.0.0.{i}:31000").parse().unwrap()))
            })
            .collect()
    }

    fn ids(order: &[Arc<BackendStats>]) -> Vec<String> {
        order.iter().map(|b| b.task_id.to_string()).collect()
    }

    #[test]
    fn round_robin_rotates_and_lists_every_backend_for_retries() {
        let b = backends(3);
        assert_eq!(ids(&order(&b, Balance::RoundRobin, 0)), ["t0", "t1", "t2"]);
        assert_eq!(ids(&order(&b, Balance::RoundRobin, 1)), ["t1", "t2", "t0"]);
        assert_eq!(ids(&order(&b, Balance::RoundRobin, 5)), ["t2", "t0", "t1"]);
        assert!(order(&[], Balance::RoundRobin, 3).is_empty());
    }

    #[test]
    fn least_connections_prefers_the_idlest_backend() {
        let b = backends(3);
        b[0].active.store(4, Ordering::Relaxed);
        b[1].active.store(1, Ordering::Relaxed);
        b[2].active.store(2, Ordering::Relaxed);
        assert_eq!(ids(&order(&b, Balance::LeastConn, 0)), ["t1", "t2", "t0"]);
        b[2].active.store(1, Ordering::Relaxed);
        assert_eq!(ids(&order(&b, Balance::LeastConn, 2)), ["t2", "t1", "t0"], "ties keep the rotation");
    }
}
