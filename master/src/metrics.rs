//! `GET /metrics`: Prometheus text exposition. Counters live here; gauges are read from
//! the core at scrape time.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use plinth_protocol::TaskState;

use crate::events::CallbackStats;
use plinth_scheduler::Core;

/// Counters updated by the shell.
#[derive(Default)]
pub struct Metrics {
    /// (method, status code) → count.
    http_requests: Mutex<BTreeMap<(String, u16), u64>>,
    store_commits: AtomicU64,
    store_records: AtomicU64,
    store_write_micros: AtomicU64,
}

impl Metrics {
    pub fn record_request(&self, method: &str, status: u16) {
        let mut map = self.http_requests.lock().expect("metrics map is never poisoned");
        *map.entry((method.to_string(), status)).or_default() += 1;
    }

    pub fn record_store_write(&self, records: usize, took: Duration) {
        self.store_commits.fetch_add(1, Ordering::Relaxed);
        self.store_records.fetch_add(records as u64, Ordering::Relaxed);
        self.store_write_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Renders every metric.
    pub fn render(&self, core: &Core, events_published: u64, callbacks: CallbackStats) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric("plinth_apps", "gauge", "Apps defined.", vec![(String::new(), core.apps().count() as f64)]);
        let instances: i64 = core.apps().map(|a| a.definition.instances).sum();
        metric(
            "plinth_app_instances_desired",
            "gauge",
            "Sum of the apps' instances.",
            vec![(String::new(), instances as f64)],
        );

        let mut by_state: BTreeMap<&'static str, u64> = BTreeMap::new();
        for state in [TaskState::TaskStaging, TaskState::TaskStarting, TaskState::TaskRunning, TaskState::TaskKilling] {
            by_state.insert(state.as_str(), 0);
        }
        for task in core.tasks() {
            *by_state.entry(task.visible_state().as_str()).or_default() += 1;
        }
        metric(
            "plinth_tasks",
            "gauge",
            "Tasks known to the master, by state.",
            by_state.into_iter().map(|(s, n)| (format!("{{state=\"{s}\"}}"), n as f64)).collect(),
        );

        let (mut active, mut lost, mut draining) = (0u64, 0u64, 0u64);
        let (mut total_cpus, mut total_mem, mut total_disk) = (0.0, 0.0, 0.0);
        let (mut used_cpus, mut used_mem, mut used_disk) = (0.0, 0.0, 0.0);
        for agent in core.agents() {
            if agent.record.active {
                active += 1;
                total_cpus += agent.record.resources.cpus;
                total_mem += agent.record.resources.mem;
                total_disk += agent.record.resources.disk;
                used_cpus += agent.used.cpus;
                used_mem += agent.used.mem;
                used_disk += agent.used.disk;
            } else {
                lost += 1;
            }
            if agent.record.draining {
                draining += 1;
            }
        }
        metric(
            "plinth_agents",
            "gauge",
            "Registered agents by status.",
            vec![
                ("{status=\"active\"}".into(), active as f64),
                ("{status=\"lost\"}".into(), lost as f64),
                ("{status=\"draining\"}".into(), draining as f64),
            ],
        );
        metric(
            "plinth_resources_total",
            "gauge",
            "Resources of active agents (cpus, mem MB, disk MB).",
            vec![
                ("{resource=\"cpus\"}".into(), total_cpus),
                ("{resource=\"mem\"}".into(), total_mem),
                ("{resource=\"disk\"}".into(), total_disk),
            ],
        );
        metric(
            "plinth_resources_used",
            "gauge",
            "Resources used by tasks on active agents.",
            vec![
                ("{resource=\"cpus\"}".into(), used_cpus),
                ("{resource=\"mem\"}".into(), used_mem),
                ("{resource=\"disk\"}".into(), used_disk),
            ],
        );
        metric(
            "plinth_deployments",
            "gauge",
            "Deployments in progress.",
            vec![(String::new(), core.deployments().count() as f64)],
        );
        metric(
            "plinth_queue_apps",
            "gauge",
            "Apps waiting for launches.",
            vec![(String::new(), core.queue(plinth_protocol::Timestamp::now()).len() as f64)],
        );
        metric(
            "plinth_events_published_total",
            "counter",
            "Events published.",
            vec![(String::new(), events_published as f64)],
        );
        metric(
            "plinth_event_subscribers",
            "gauge",
            "HTTP callback subscribers.",
            vec![(String::new(), callbacks.subscribers as f64)],
        );
        metric(
            "plinth_callback_events_total",
            "counter",
            "Events sent to callback subscribers, by outcome.",
            vec![
                ("{outcome=\"delivered\"}".into(), callbacks.delivered as f64),
                ("{outcome=\"failed\"}".into(), callbacks.failed as f64),
                ("{outcome=\"dropped\"}".into(), callbacks.dropped as f64),
            ],
        );
        metric(
            "plinth_store_commits_total",
            "counter",
            "Store write transactions.",
            vec![(String::new(), self.store_commits.load(Ordering::Relaxed) as f64)],
        );
        metric(
            "plinth_store_records_written_total",
            "counter",
            "Records written or deleted.",
            vec![(String::new(), self.store_records.load(Ordering::Relaxed) as f64)],
        );
        metric(
            "plinth_store_write_seconds_total",
            "counter",
            "Time spent in store write transactions.",
            vec![(String::new(), self.store_write_micros.load(Ordering::Relaxed) as f64 / 1e6)],
        );
        let requests = self.http_requests.lock().expect("metrics map is never poisoned").clone();
        metric(
            "plinth_http_requests_total",
            "counter",
            "HTTP requests answered, by method and status code.",
            requests.into_iter().map(|((m, s), n)| (format!("{{method=\"{m}\",code=\"{s}\"}}"), n as f64)).collect(),
        );
        out
    }
}
