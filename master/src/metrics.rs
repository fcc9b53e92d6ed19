//! `GET /metrics`: the master's metrics as Marathon's metrics JSON or as Prometheus text
//! (the same metrics; `api/misc.rs` picks by `Accept`). Counters live here; gauges are read
//! from the core at scrape time.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use plinth_protocol::TaskState;

use plinth_protocol::views::metrics as views;

use crate::events::CallbackStats;
use crate::registry::RegistryMetrics;
use plinth_scheduler::Core;

/// Counters updated by the shell.
#[derive(Default)]
pub struct Metrics {
    /// (method, status code) → count.
    http_requests: Mutex<BTreeMap<(String, u16), u64>>,
    store_commits: AtomicU64,
    store_records: AtomicU64,
    store_write_micros: AtomicU64,
    rounds: AtomicU64,
    leader_changes: AtomicU64,
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

    /// This master won or gave up the lead (HA on etcd).
    pub fn record_leader_change(&self) {
        self.leader_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// One scheduling round ran (on the ticker's interval or asked for by a command).
    pub fn record_round(&self) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
    }

    /// Every metric, read now: counters from here, gauges from the core.
    fn families(&self, core: &Core, events_published: u64, callbacks: CallbackStats) -> Vec<Family> {
        let mut families = Vec::new();
        let mut metric = |name: &'static str, kind: Kind, help: &'static str, samples: Vec<(String, f64)>| {
            families.push(Family { name, kind, help, samples });
        };
        metric("plinth_apps", Kind::Gauge, "Apps defined.", vec![(String::new(), core.apps().count() as f64)]);
        let instances: i64 = core.apps().map(|a| a.definition.instances).sum();
        metric(
            "plinth_app_instances_desired",
            Kind::Gauge,
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
            Kind::Gauge,
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
            Kind::Gauge,
            "Registered agents by status.",
            vec![
                ("{status=\"active\"}".into(), active as f64),
                ("{status=\"lost\"}".into(), lost as f64),
                ("{status=\"draining\"}".into(), draining as f64),
            ],
        );
        metric(
            "plinth_resources_total",
            Kind::Gauge,
            "Resources of active agents (cpus, mem MB, disk MB).",
            vec![
                ("{resource=\"cpus\"}".into(), total_cpus),
                ("{resource=\"mem\"}".into(), total_mem),
                ("{resource=\"disk\"}".into(), total_disk),
            ],
        );
        metric(
            "plinth_resources_used",
            Kind::Gauge,
            "Resources used by tasks on active agents.",
            vec![
                ("{resource=\"cpus\"}".into(), used_cpus),
                ("{resource=\"mem\"}".into(), used_mem),
                ("{resource=\"disk\"}".into(), used_disk),
            ],
        );
        metric(
            "plinth_deployments",
            Kind::Gauge,
            "Deployments in progress.",
            vec![(String::new(), core.deployments().count() as f64)],
        );
        metric(
            "plinth_queue_apps",
            Kind::Gauge,
            "Apps waiting for launches.",
            vec![(String::new(), core.queue(plinth_protocol::Timestamp::now()).len() as f64)],
        );
        metric(
            "plinth_events_published_total",
            Kind::Counter,
            "Events published.",
            vec![(String::new(), events_published as f64)],
        );
        metric(
            "plinth_event_subscribers",
            Kind::Gauge,
            "HTTP callback subscribers.",
            vec![(String::new(), callbacks.subscribers as f64)],
        );
        metric(
            "plinth_callback_events_total",
            Kind::Counter,
            "Events sent to callback subscribers, by outcome.",
            vec![
                ("{outcome=\"delivered\"}".into(), callbacks.delivered as f64),
                ("{outcome=\"failed\"}".into(), callbacks.failed as f64),
                ("{outcome=\"dropped\"}".into(), callbacks.dropped as f64),
            ],
        );
        metric(
            "plinth_scheduling_rounds_total",
            Kind::Counter,
            "Scheduling rounds: on the ticker's interval and at once after commands that changed something.",
            vec![(String::new(), self.rounds.load(Ordering::Relaxed) as f64)],
        );
        metric(
            "plinth_store_commits_total",
            Kind::Counter,
            "Store write transactions.",
            vec![(String::new(), self.store_commits.load(Ordering::Relaxed) as f64)],
        );
        metric(
            "plinth_store_records_written_total",
            Kind::Counter,
            "Records written or deleted.",
            vec![(String::new(), self.store_records.load(Ordering::Relaxed) as f64)],
        );
        metric(
            "plinth_store_write_seconds_total",
            Kind::Counter,
            "Time spent in store write transactions.",
            vec![(String::new(), self.store_write_micros.load(Ordering::Relaxed) as f64 / 1e6)],
        );
        metric(
            "plinth_leader_changes_total",
            Kind::Counter,
            "Times this master won or gave up the lead (HA masters on etcd).",
            vec![(String::new(), self.leader_changes.load(Ordering::Relaxed) as f64)],
        );
        let requests = self.http_requests.lock().expect("metrics map is never poisoned").clone();
        metric(
            "plinth_http_requests_total",
            Kind::Counter,
            "HTTP requests answered, by method and status code.",
            requests.into_iter().map(|((m, s), n)| (format!("{{method=\"{m}\",code=\"{s}\"}}"), n as f64)).collect(),
        );
        families
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, core: &Core, events_published: u64, callbacks: CallbackStats) -> String {
        let mut out = String::new();
        for family in self.families(core, events_published, callbacks) {
            let Family { name, kind, help, samples } = family;
            let kind = match kind {
                Kind::Gauge => "gauge",
                Kind::Counter => "counter",
            };
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }

    /// The same metrics as Marathon 1.7+'s JSON (`plinth_protocol::views::metrics`), named
    /// with dots and their labels' values (`plinth.tasks.state.TASK_RUNNING`): whole-numbered
    /// counters are `counters`, everything else (counters of seconds too) `gauges`.
    pub fn json(
        &self,
        core: &Core,
        events_published: u64,
        callbacks: CallbackStats,
        registry: &RegistryMetrics,
    ) -> views::Metrics {
        let mut metrics = views::Metrics {
            version: views::METRICS_JSON_VERSION.to_string(),
            counters: BTreeMap::new(),
            gauges: BTreeMap::new(),
            histograms: BTreeMap::new(),
            meters: BTreeMap::new(),
            timers: BTreeMap::new(),
        };
        let mut families = self.families(core, events_published, callbacks);
        families.extend(registry_families(registry));
        for Family { name, kind, samples, .. } in families {
            for (labels, value) in samples {
                let key = json_name(name, &labels);
                match (kind, whole_count(value)) {
                    (Kind::Counter, Some(count)) => {
                        metrics.counters.insert(key, views::Counter { count });
                    }
                    _ => {
                        metrics.gauges.insert(key, views::Gauge { value });
                    }
                }
            }
        }
        metrics
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

/// One metric and its samples (label set → value).
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: Vec<(String, f64)>,
}

/// The registry's counters as families (its Prometheus text is its own `render`).
fn registry_families(registry: &RegistryMetrics) -> Vec<Family> {
    let counter = |name: &'static str, value: &AtomicU64| Family {
        name,
        kind: Kind::Counter,
        help: "",
        samples: vec![(String::new(), value.load(Ordering::Relaxed) as f64)],
    };
    vec![
        counter("plinth_registry_pulls_total", &registry.pulls),
        counter("plinth_registry_pulls_failed_total", &registry.pulls_failed),
        counter("plinth_registry_upstream_bytes_total", &registry.upstream_bytes),
        counter("plinth_registry_served_bytes_total", &registry.served_bytes),
        counter("plinth_registry_pushed_bytes_total", &registry.pushed_bytes),
    ]
}

/// A whole, non-negative value as a count.
fn whole_count(value: f64) -> Option<u64> {
    // why: checked whole and non-negative; counters stay far below 2^53.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let count = value as u64;
    (value.fract() == 0.0 && value >= 0.0).then_some(count)
}

/// `plinth_tasks` + `{state="TASK_RUNNING"}` → `plinth.tasks.state.TASK_RUNNING`.
fn json_name(name: &str, labels: &str) -> String {
    let mut key = name.replace('_', ".");
    let labels = labels.trim_start_matches('{').trim_end_matches('}');
    for pair in labels.split(',').filter(|p| !p.is_empty()) {
        if let Some((label, value)) = pair.split_once('=') {
            key.push('.');
            key.push_str(label);
            key.push('.');
            key.push_str(value.trim_matches('"'));
        }
    }
    key
}
