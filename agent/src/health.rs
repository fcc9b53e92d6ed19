//! Health and readiness checks, the pure part: what to probe for each of an app's
//! `healthChecks` / `readinessChecks`, when each probe is due, and what a probe's result
//! does to the task's health summary (and whether the master must hear about it).
//!
//! Time comes in as an argument; nothing here opens sockets or runs commands (that is
//! [`crate::checks`]). The semantics are Marathon's: nothing is probed before
//! `delaySeconds`; failures are ignored during `gracePeriodSeconds` until the first
//! success; a check is alive while its last counted result was a success. The agent only
//! checks and reports: killing after `maxConsecutiveFailures` is the master's decision.
// Pure: no clock, entropy or spawning here (the ban is in clippy.toml).
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]
use plinth_protocol::marathon::{HealthCheck, ReadinessCheck};
use plinth_protocol::{TaskId, Timestamp};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};

/// What Marathon users read when an HTTPS check cannot run here.
pub const HTTPS_UNSUPPORTED: &str = "HTTPS health checks are not supported yet";

/// How one check is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// GET; healthy on 200–399.
    Http { url: String, ignore_1xx: bool },
    /// Healthy when a connection opens.
    Tcp { addr: SocketAddr },
    /// `/bin/sh -c command` in the task's sandbox with its environment; exit 0 is healthy.
    Command { command: String },
    /// The check cannot run (bad port index, unsupported protocol): every probe fails
    /// with this cause, so the task shows why it is not healthy.
    Unusable { cause: String },
}

/// The port a check addresses: `port` when set, else host port `portIndex` (default 0).
fn check_port(check: &HealthCheck, host_ports: &[u16]) -> Result<u16, String> {
    if let Some(port) = check.port.filter(|p| *p > 0) {
        return u16::try_from(port).map_err(|_| format!("port {port} is not a valid port"));
    }
    let index = check.port_index.unwrap_or(0);
    usize::try_from(index)
        .ok()
        .and_then(|i| host_ports.get(i).copied())
        .ok_or_else(|| format!("portIndex {index} is beyond the task's {} host ports", host_ports.len()))
}

/// The probe for one of an app's health checks on a task with these host ports,
/// reached at `host` (the agent's own address: checks run next to the task).
pub fn probe_for(check: &HealthCheck, host: IpAddr, host_ports: &[u16]) -> Probe {
    let protocol = check.protocol.to_ascii_uppercase();
    let port = || check_port(check, host_ports);
    match protocol.as_str() {
        "HTTP" | "MESOS_HTTP" => match port() {
            Ok(port) => {
                let path = check.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
                let slash = if path.starts_with('/') { "" } else { "/" };
                Probe::Http {
                    url: format!("http://{}{slash}{path}", SocketAddr::new(host, port)),
                    ignore_1xx: check.ignore_http1xx,
                }
            }
            Err(cause) => Probe::Unusable { cause },
        },
        "HTTPS" | "MESOS_HTTPS" => Probe::Unusable { cause: HTTPS_UNSUPPORTED.into() },
        "TCP" | "MESOS_TCP" => match port() {
            Ok(port) => Probe::Tcp { addr: SocketAddr::new(host, port) },
            Err(cause) => Probe::Unusable { cause },
        },
        "COMMAND" => match check.command.as_ref().map(|c| c.value.trim()).filter(|v| !v.is_empty()) {
            Some(_) => Probe::Command { command: check.command.as_ref().map(|c| c.value.clone()).unwrap_or_default() },
            None => Probe::Unusable { cause: "COMMAND health check without a command value".into() },
        },
        other => Probe::Unusable { cause: format!("unknown health check protocol '{other}'") },
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Healthy,
    Unhealthy(String),
    /// Neither: a 1xx answer with `ignoreHttp1xx`. Changes nothing.
    Ignored,
}

/// Marathon's HTTP rule: 200–399 is healthy, 1xx is ignored when asked, the rest fails.
pub fn http_outcome(status: u16, ignore_1xx: bool) -> Outcome {
    match status {
        200..=399 => Outcome::Healthy,
        100..=199 if ignore_1xx => Outcome::Ignored,
        _ => Outcome::Unhealthy(format!("HTTP status {status}")),
    }
}

/// Marathon's `healthCheckResults` entry for one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub alive: bool,
    pub consecutive_failures: u32,
    pub first_success: Option<String>,
    pub last_success: Option<String>,
    pub last_failure: Option<String>,
    pub last_failure_cause: Option<String>,
    pub task_id: TaskId,
    pub instance_id: TaskId,
}

/// A summary the master must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// Every check alive.
    pub healthy: bool,
    /// One per check, in the app's order.
    pub results: Vec<CheckResult>,
}

#[derive(Debug, Clone, PartialEq)]
struct CheckState {
    grace_ms: i64,
    interval_ms: i64,
    next_due: Timestamp,
    in_flight: bool,
    counted: bool,
    alive: bool,
    consecutive_failures: u32,
    first_success: Option<Timestamp>,
    last_success: Option<Timestamp>,
    last_failure: Option<Timestamp>,
    last_failure_cause: Option<String>,
}

fn seconds_ms(seconds: u64) -> i64 {
    i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// The health of one task: one state per check, plus what was last reported.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskHealth {
    task_id: TaskId,
    /// When the task started running: the grace period counts from here.
    running_since: Timestamp,
    checks: Vec<CheckState>,
    /// Per check (counted, alive, consecutive failures) as last reported.
    reported: Option<Vec<(bool, bool, u32)>>,
}

impl TaskHealth {
    /// Starts checking at `now`: the first probe of each check is due `delaySeconds`
    /// later. `running_since` may be earlier (a re-adopted task keeps its grace clock).
    pub fn new(task_id: TaskId, checks: &[HealthCheck], running_since: Timestamp, now: Timestamp) -> Self {
        let checks = checks
            .iter()
            .map(|c| CheckState {
                grace_ms: seconds_ms(c.grace_period_seconds),
                // A zero interval would probe in a busy loop.
                interval_ms: seconds_ms(c.interval_seconds).max(100),
                next_due: now.plus_millis(seconds_ms(c.delay_seconds)),
                in_flight: false,
                counted: false,
                alive: false,
                consecutive_failures: 0,
                first_success: None,
                last_success: None,
                last_failure: None,
                last_failure_cause: None,
            })
            .collect();
        TaskHealth { task_id, running_since, checks, reported: None }
    }

    /// Checks whose probe should start now; each is marked in flight (no second probe
    /// starts before its result is recorded) and its next probe scheduled an interval on.
    pub fn due(&mut self, now: Timestamp) -> Vec<usize> {
        let mut due = Vec::new();
        for (index, check) in self.checks.iter_mut().enumerate() {
            if !check.in_flight && now >= check.next_due {
                check.in_flight = true;
                check.next_due = now.plus_millis(check.interval_ms);
                due.push(index);
            }
        }
        due
    }

    /// Records a probe's result; returns the report to send when the summary changed
    /// (first result, a check turning alive or dead, a new failure count).
    pub fn record(&mut self, index: usize, outcome: Outcome, now: Timestamp) -> Option<HealthReport> {
        let running_since = self.running_since;
        let check = self.checks.get_mut(index)?;
        check.in_flight = false;
        match outcome {
            Outcome::Ignored => {}
            Outcome::Healthy => {
                check.counted = true;
                check.alive = true;
                check.consecutive_failures = 0;
                check.first_success.get_or_insert(now);
                check.last_success = Some(now);
            }
            Outcome::Unhealthy(_)
                if check.first_success.is_none() && now < running_since.plus_millis(check.grace_ms) =>
            {
                // Marathon: failures in the grace period count only after a success.
            }
            Outcome::Unhealthy(cause) => {
                check.counted = true;
                check.alive = false;
                check.consecutive_failures = check.consecutive_failures.saturating_add(1);
                check.last_failure = Some(now);
                check.last_failure_cause = Some(cause);
            }
        }
        let summary: Vec<(bool, bool, u32)> =
            self.checks.iter().map(|c| (c.counted, c.alive, c.consecutive_failures)).collect();
        if !summary.iter().any(|(counted, _, _)| *counted) || self.reported.as_ref() == Some(&summary) {
            return None;
        }
        self.reported = Some(summary);
        Some(self.report())
    }

    /// The current summary, whether or not it changed.
    pub fn report(&self) -> HealthReport {
        let iso = |t: Option<Timestamp>| t.map(Timestamp::to_iso);
        let results = self
            .checks
            .iter()
            .map(|c| CheckResult {
                alive: c.alive,
                consecutive_failures: c.consecutive_failures,
                first_success: iso(c.first_success),
                last_success: iso(c.last_success),
                last_failure: iso(c.last_failure),
                last_failure_cause: c.last_failure_cause.clone(),
                task_id: self.task_id.clone(),
                instance_id: self.task_id.clone(),
            })
            .collect();
        HealthReport { healthy: self.checks.iter().all(|c| c.alive), results }
    }
}

/// The URL a readiness check polls: the host port named `portName`, else the first.
/// `Err` is the reason the check can never pass.
pub fn readiness_url(
    check: &ReadinessCheck,
    host: IpAddr,
    host_ports: &[u16],
    port_names: &[Option<String>],
) -> Result<String, String> {
    if !check.protocol.eq_ignore_ascii_case("HTTP") {
        return Err(format!("readiness check protocol '{}' is not supported (only HTTP)", check.protocol));
    }
    let named =
        port_names.iter().position(|n| n.as_deref() == Some(check.port_name.as_str()) && !check.port_name.is_empty());
    let port = named
        .and_then(|i| host_ports.get(i))
        .or_else(|| host_ports.first())
        .ok_or_else(|| "the task has no host port for its readiness check".to_string())?;
    let path = if check.path.starts_with('/') { check.path.clone() } else { format!("/{}", check.path) };
    Ok(format!("http://{}{path}", SocketAddr::new(host, *port)))
}

/// Marathon's `readinessCheckResults` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessResult {
    pub name: String,
    pub task_id: TaskId,
    pub ready: bool,
    /// Status code of the last answer, or why there was none.
    pub last_response: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct ReadinessState {
    name: String,
    interval_ms: i64,
    ready_codes: Vec<u16>,
    next_due: Timestamp,
    in_flight: bool,
    ready: bool,
    last_response: Option<String>,
}

/// The readiness of one task. Checks stop once all are ready (Marathon polls readiness
/// only until then).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReadiness {
    task_id: TaskId,
    checks: Vec<ReadinessState>,
    reported: Option<bool>,
}

/// A readiness change for the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessReport {
    pub ready: bool,
    pub results: Vec<ReadinessResult>,
}

impl TaskReadiness {
    /// The first poll is due at once.
    pub fn new(task_id: TaskId, checks: &[ReadinessCheck], now: Timestamp) -> Self {
        let checks = checks
            .iter()
            .map(|c| ReadinessState {
                name: c.name.clone(),
                interval_ms: seconds_ms(c.interval_seconds).max(100),
                ready_codes: c.http_status_codes_for_ready.clone(),
                next_due: now,
                in_flight: false,
                ready: false,
                last_response: None,
            })
            .collect();
        TaskReadiness { task_id, checks, reported: None }
    }

    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|c| c.ready)
    }

    /// Checks to poll now (none once ready); marked in flight as for health checks.
    pub fn due(&mut self, now: Timestamp) -> Vec<usize> {
        let mut due = Vec::new();
        for (index, check) in self.checks.iter_mut().enumerate() {
            if !check.ready && !check.in_flight && now >= check.next_due {
                check.in_flight = true;
                check.next_due = now.plus_millis(check.interval_ms);
                due.push(index);
            }
        }
        due
    }

    /// Records a poll: the HTTP status, or why there was none. Returns a report on the
    /// first result and whenever the task's readiness flips.
    pub fn record(&mut self, index: usize, answer: Result<u16, String>, _now: Timestamp) -> Option<ReadinessReport> {
        let check = self.checks.get_mut(index)?;
        check.in_flight = false;
        match answer {
            Ok(status) => {
                check.ready = check.ready_codes.contains(&status);
                check.last_response = Some(format!("HTTP status {status}"));
            }
            Err(cause) => {
                check.ready = false;
                check.last_response = Some(cause);
            }
        }
        let ready = self.is_ready();
        if self.reported == Some(ready) {
            return None;
        }
        self.reported = Some(ready);
        let results = self
            .checks
            .iter()
            .map(|c| ReadinessResult {
                name: c.name.clone(),
                task_id: self.task_id.clone(),
                ready: c.ready,
                last_response: c.last_response.clone(),
            })
            .collect();
        Some(ReadinessReport { ready, results })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: serde_json::Value) -> HealthCheck {
        serde_json::from_value(value).unwrap()
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn probes_follow_protocol_port_and_path() {
        let http = check(json!({"protocol": "HTTP", "path": "/health", "portIndex": 1}));
        assert_eq!(
            probe_for(&http, LOCAL, &[31000, 31001]),
            Probe::Http { url: "http://127.0.0.1:31001/health".into(), ignore_1xx: false }
        );
        let mesos = check(json!({"protocol": "MESOS_HTTP", "port": 8080, "ignoreHttp1xx": true}));
        assert_eq!(
            probe_for(&mesos, LOCAL, &[]),
            Probe::Http { url: "http://127.0.0.1:8080/".into(), ignore_1xx: true }
        );
        let tcp = check(json!({"protocol": "MESOS_TCP"}));
        assert_eq!(probe_for(&tcp, LOCAL, &[31005]), Probe::Tcp { addr: "127.0.0.1:31005".parse().unwrap() });
        let command = check(json!({"protocol": "COMMAND", "command": {"value": "test -f ready"}}));
        assert_eq!(probe_for(&command, LOCAL, &[]), Probe::Command { command: "test -f ready".into() });
        let beyond = check(json!({"protocol": "TCP", "portIndex": 2}));
        assert_eq!(
            probe_for(&beyond, LOCAL, &[31000]),
            Probe::Unusable { cause: "portIndex 2 is beyond the task's 1 host ports".into() }
        );
        let https = check(json!({"protocol": "HTTPS"}));
        assert_eq!(probe_for(&https, LOCAL, &[31000]), Probe::Unusable { cause: HTTPS_UNSUPPORTED.into() });
        let empty = check(json!({"protocol": "COMMAND", "command": {"value": " "}}));
        assert!(matches!(probe_for(&empty, LOCAL, &[]), Probe::Unusable { .. }));
    }

    #[test]
    fn http_status_rules() {
        assert_eq!(http_outcome(200, false), Outcome::Healthy);
        assert_eq!(http_outcome(302, false), Outcome::Healthy);
        assert_eq!(http_outcome(399, false), Outcome::Healthy);
        assert_eq!(http_outcome(404, false), Outcome::Unhealthy("HTTP status 404".into()));
        assert_eq!(http_outcome(503, true), Outcome::Unhealthy("HTTP status 503".into()));
        assert_eq!(http_outcome(102, false), Outcome::Unhealthy("HTTP status 102".into()));
        assert_eq!(http_outcome(102, true), Outcome::Ignored);
    }

    fn ms(t: i64) -> Timestamp {
        Timestamp(t)
    }

    fn tracker(value: serde_json::Value) -> TaskHealth {
        TaskHealth::new(TaskId::new("web.1"), &[check(value)], ms(1_000), ms(1_000))
    }

    fn bad() -> Outcome {
        Outcome::Unhealthy("connection refused".into())
    }

    #[test]
    fn first_probe_waits_for_the_delay_then_runs_every_interval_one_at_a_time() {
        let mut h = tracker(json!({"protocol": "TCP", "delaySeconds": 2, "intervalSeconds": 5}));
        assert!(h.due(ms(2_999)).is_empty());
        assert_eq!(h.due(ms(3_000)), vec![0]);
        assert!(h.due(ms(9_000)).is_empty(), "still in flight");
        h.record(0, Outcome::Healthy, ms(9_000));
        assert_eq!(h.due(ms(9_000)), vec![0], "overdue: runs at once");
        assert!(h.due(ms(13_999)).is_empty());
        h.record(0, Outcome::Healthy, ms(9_100));
        assert_eq!(h.due(ms(14_000)), vec![0]);
    }

    #[test]
    fn failures_in_the_grace_period_are_ignored_until_the_first_success() {
        let mut h = tracker(json!({"protocol": "TCP", "gracePeriodSeconds": 10}));
        // Grace runs from 1 000 to 11 000.
        assert_eq!(h.record(0, bad(), ms(5_000)), None);
        assert_eq!(h.record(0, bad(), ms(10_999)), None);
        let report = h.record(0, bad(), ms(11_000)).expect("the first counted failure is reported");
        assert!(!report.healthy);
        assert_eq!(report.results[0].consecutive_failures, 1);
        assert_eq!(report.results[0].last_failure_cause.as_deref(), Some("connection refused"));
        assert_eq!(report.results[0].last_failure.as_deref(), Some(ms(11_000).to_iso().as_str()));

        let mut h = tracker(json!({"protocol": "TCP", "gracePeriodSeconds": 10}));
        let healthy = h.record(0, Outcome::Healthy, ms(2_000)).expect("first success");
        assert!(healthy.healthy);
        assert_eq!(healthy.results[0].first_success.as_deref(), Some(ms(2_000).to_iso().as_str()));
        let failed = h.record(0, bad(), ms(3_000)).expect("after a success, grace no longer hides failures");
        assert_eq!((failed.healthy, failed.results[0].consecutive_failures), (false, 1));
    }

    #[test]
    fn every_new_failure_count_is_reported_and_a_success_resets_it() {
        let mut h = tracker(json!({"protocol": "TCP", "gracePeriodSeconds": 0, "maxConsecutiveFailures": 3}));
        let counts: Vec<u32> = (1..=4)
            .map(|i| h.record(0, bad(), ms(1_000 + i)).expect("reported").results[0].consecutive_failures)
            .collect();
        assert_eq!(counts, vec![1, 2, 3, 4], "the agent keeps checking and counting past the maximum");
        let healed = h.record(0, Outcome::Healthy, ms(2_000)).expect("alive again");
        assert_eq!((healed.healthy, healed.results[0].consecutive_failures), (true, 0));
        assert_eq!(healed.results[0].last_failure.as_deref(), Some(ms(1_004).to_iso().as_str()), "history kept");
        assert_eq!(h.record(0, Outcome::Healthy, ms(3_000)), None, "no change, no report");
        assert_eq!(h.report().results[0].last_success.as_deref(), Some(ms(3_000).to_iso().as_str()));
    }

    #[test]
    fn ignored_1xx_changes_nothing() {
        let mut h = tracker(json!({"protocol": "HTTP", "gracePeriodSeconds": 0, "ignoreHttp1xx": true}));
        assert_eq!(h.record(0, Outcome::Ignored, ms(2_000)), None);
        assert!(h.record(0, Outcome::Healthy, ms(3_000)).is_some());
        assert_eq!(h.record(0, Outcome::Ignored, ms(4_000)), None);
        assert!(h.report().healthy);
    }

    #[test]
    fn healthy_only_when_every_check_is_alive() {
        let checks = [check(json!({"protocol": "TCP", "gracePeriodSeconds": 0})), check(json!({"protocol": "HTTP"}))];
        let mut h = TaskHealth::new(TaskId::new("web.1"), &checks, ms(0), ms(0));
        let first = h.record(0, Outcome::Healthy, ms(1)).expect("first result");
        assert!(!first.healthy, "the second check has no result yet");
        assert_eq!(first.results.len(), 2);
        assert_eq!(
            first.results[1],
            CheckResult {
                alive: false,
                consecutive_failures: 0,
                first_success: None,
                last_success: None,
                last_failure: None,
                last_failure_cause: None,
                task_id: TaskId::new("web.1"),
                instance_id: TaskId::new("web.1"),
            }
        );
        assert!(h.record(1, Outcome::Healthy, ms(2)).expect("second alive").healthy);
        let json = serde_json::to_value(&h.report().results[0]).unwrap();
        for key in [
            "alive",
            "consecutiveFailures",
            "firstSuccess",
            "lastSuccess",
            "lastFailure",
            "lastFailureCause",
            "taskId",
            "instanceId",
        ] {
            assert!(json.get(key).is_some(), "{key} is in Marathon's shape");
        }
    }

    #[test]
    fn readiness_reports_first_result_and_flips_then_stops_polling() {
        let rc: ReadinessCheck =
            serde_json::from_value(json!({"name": "ready", "portName": "http", "path": "ready", "intervalSeconds": 1, "httpStatusCodesForReady": [200, 204]}))
                .unwrap();
        let url = readiness_url(&rc, LOCAL, &[31000, 31001], &[Some("admin".into()), Some("http".into())]).unwrap();
        assert_eq!(url, "http://127.0.0.1:31001/ready");
        let unnamed = readiness_url(&rc, LOCAL, &[31000], &[None]).unwrap();
        assert_eq!(unnamed, "http://127.0.0.1:31000/ready", "falls back to the first port");

        let mut r = TaskReadiness::new(TaskId::new("web.1"), &[rc], ms(0));
        assert_eq!(r.due(ms(0)), vec![0]);
        let first = r.record(0, Ok(503), ms(10)).expect("first result");
        assert!(!first.ready);
        assert_eq!(first.results[0].last_response.as_deref(), Some("HTTP status 503"));
        assert_eq!(r.due(ms(999)), Vec::<usize>::new());
        assert_eq!(r.due(ms(1_000)), vec![0]);
        assert_eq!(r.record(0, Err("connection refused".into()), ms(1_010)), None, "still not ready");
        assert_eq!(r.due(ms(2_000)), vec![0]);
        assert!(r.record(0, Ok(204), ms(2_010)).expect("ready").ready);
        assert!(r.due(ms(9_000)).is_empty(), "no polling once ready");
    }
}
