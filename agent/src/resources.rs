//! What this machine offers when the operator does not say (`--resources`), following
//! the Mesos agent's rules so numbers look familiar.
use plinth_protocol::{PortRanges, Resources};
use std::path::Path;

const MB: f64 = 1024.0 * 1024.0;
/// Default host-port range for tasks (the Mesos agent's).
pub const DEFAULT_PORTS: (u16, u16) = (31000, 32000);

/// Detects cpus, mem, disk (of the work dir's filesystem) and the default port range.
pub fn detect_resources(work_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem_total_mb = total_memory_mb().unwrap_or(0.0);
    let disk_total_mb = filesystem_size_mb(work_dir).unwrap_or(0.0);
    resources_from_totals(cpus, mem_total_mb, disk_total_mb)
}

/// Mesos: all CPUs; memory minus 1 GB for the system when there are at least 2 GB, else
/// half; disk minus 5 GB when there are at least 10 GB, else half.
pub fn resources_from_totals(cpus: usize, mem_total_mb: f64, disk_total_mb: f64) -> Resources {
    let mem = if mem_total_mb >= 2048.0 { mem_total_mb - 1024.0 } else { mem_total_mb / 2.0 };
    let disk = if disk_total_mb >= 10240.0 { disk_total_mb - 5120.0 } else { disk_total_mb / 2.0 };
    Resources { cpus: cpus as f64, mem: mem.floor(), disk: disk.floor(), ports: PortRanges::new([DEFAULT_PORTS]) }
}

fn total_memory_mb() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total_kb(&meminfo).map(|kb| kb as f64 / 1024.0)
}

fn parse_mem_total_kb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Size of the filesystem holding `path`, looking at the nearest existing ancestor
/// because the work dir may not exist yet on first start.
fn filesystem_size_mb(path: &Path) -> Option<f64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let stat = nix::sys::statvfs::statvfs(existing).ok()?;
    Some(stat.blocks() as f64 * stat.fragment_size() as f64 / MB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesos_rules_for_memory_and_disk() {
        let big = resources_from_totals(8, 16384.0, 100_000.0);
        assert_eq!((big.cpus, big.mem, big.disk), (8.0, 15360.0, 94880.0));
        assert_eq!(big.ports.ranges(), &[(31000, 32000)]);
        let small = resources_from_totals(1, 1024.0, 4096.0);
        assert_eq!((small.cpus, small.mem, small.disk), (1.0, 512.0, 2048.0));
        let edge = resources_from_totals(2, 2048.0, 10240.0);
        assert_eq!((edge.mem, edge.disk), (1024.0, 5120.0));
    }

    #[test]
    fn meminfo_total_is_read() {
        assert_eq!(parse_mem_total_kb("MemTotal:       16318412 kB\nMemFree: 1 kB\n"), Some(16318412));
        assert_eq!(parse_mem_total_kb("nothing"), None);
    }

    #[test]
    fn detection_on_this_host_is_plausible() {
        let r = detect_resources(Path::new("/nonexistent/plinth/work"));
        assert!(r.cpus >= 1.0);
        assert!(r.mem > 0.0);
        assert!(r.disk > 0.0);
    }
}
