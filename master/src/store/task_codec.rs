//! The compact encoding of task records, the store's most numerous and most often
//! written records (one write per placement and per status change): a format byte then
//! `postcard` of [`TaskWire`], inside the usual checksum (`checksum.rs`). About a third of
//! the JSON's size and several times faster to write and read. Records written as JSON
//! (by earlier versions) still read: the payload's first byte tells the formats apart
//! (`{` is JSON), and the core writes a record anew in this form when it next changes.
//!
//! Fields are positional in postcard, so [`TaskWire`] is the format: a change to it is a
//! new format byte, never an edit in place.
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use plinth_protocol::{AgentId, AppId, PortRanges, Resources, TaskId, TaskState, Timestamp};
use plinth_scheduler::TaskRecord;

use super::StoreError;

/// The first payload byte of a task record in [`TaskWire`] form.
pub const TASK_POSTCARD_V1: u8 = 0x01;

const TABLE: &str = "tasks";

/// Every task state, to read a state back from its name (names, not variant numbers, are
/// stored: a reordered enum must not change stored states).
const STATES: [TaskState; 12] = [
    TaskState::TaskStaging,
    TaskState::TaskStarting,
    TaskState::TaskRunning,
    TaskState::TaskKilling,
    TaskState::TaskFinished,
    TaskState::TaskFailed,
    TaskState::TaskKilled,
    TaskState::TaskLost,
    TaskState::TaskUnreachable,
    TaskState::TaskError,
    TaskState::TaskGone,
    TaskState::TaskDropped,
];

/// A [`TaskRecord`] as stored: borrowed on the way out, borrowed from the stored bytes
/// on the way in. The free-form JSON fields (`health`, `ipAddresses`) are kept as JSON text.
#[derive(Serialize, Deserialize)]
struct TaskWire<'a> {
    #[serde(borrow)]
    id: &'a str,
    app_id: &'a str,
    version: &'a str,
    agent_id: &'a str,
    host: &'a str,
    ports: Cow<'a, [u16]>,
    cpus: f64,
    mem: f64,
    disk: f64,
    port_ranges: Cow<'a, [(u16, u16)]>,
    state: &'a str,
    staged_at: i64,
    started_at: Option<i64>,
    updated_at: i64,
    kill_requested: bool,
    kill_reason: Option<&'a str>,
    drain_since: Option<i64>,
    healthy: Option<bool>,
    message: Option<&'a str>,
    health: Option<Cow<'a, str>>,
    ip_addresses: Option<Cow<'a, str>>,
    ready: Option<bool>,
    unreachable_since: Option<i64>,
}

/// The stored payload of a task (format byte + postcard), before its checksum.
pub fn encode_task(key: &str, task: &TaskRecord) -> Result<Vec<u8>, StoreError> {
    let json_text = |value: &serde_json::Value| {
        serde_json::to_string(value).map_err(|source| StoreError::Encode { table: TABLE, key: key.to_string(), source })
    };
    let health = task.health.as_ref().map(json_text).transpose()?.map(Cow::Owned);
    let ip_addresses = if task.ip_addresses.is_empty() {
        None
    } else {
        Some(Cow::Owned(serde_json::to_string(&task.ip_addresses).map_err(|source| StoreError::Encode {
            table: TABLE,
            key: key.to_string(),
            source,
        })?))
    };
    let wire = TaskWire {
        id: task.id.as_str(),
        app_id: task.app_id.as_str(),
        version: &task.version,
        agent_id: task.agent_id.as_str(),
        host: &task.host,
        ports: Cow::Borrowed(&task.ports),
        cpus: task.resources.cpus,
        mem: task.resources.mem,
        disk: task.resources.disk,
        port_ranges: Cow::Borrowed(task.resources.ports.ranges()),
        state: task.state.as_str(),
        staged_at: task.staged_at.0,
        started_at: task.started_at.map(|t| t.0),
        updated_at: task.updated_at.0,
        kill_requested: task.kill_requested,
        kill_reason: task.kill_reason.as_deref(),
        drain_since: task.drain_since.map(|t| t.0),
        healthy: task.healthy,
        message: task.message.as_deref(),
        health,
        ip_addresses,
        ready: task.ready,
        unreachable_since: task.unreachable_since.map(|t| t.0),
    };
    let mut out = vec![TASK_POSTCARD_V1];
    postcard::to_io(&wire, &mut out).map_err(|source| StoreError::EncodeCompact {
        table: TABLE,
        key: key.to_string(),
        source,
    })?;
    Ok(out)
}

/// A task back from its payload (the checksum already verified): postcard or JSON.
pub fn decode_task(key: &str, payload: &[u8]) -> Result<TaskRecord, StoreError> {
    match payload.split_first() {
        Some((&TASK_POSTCARD_V1, rest)) => from_wire(key, rest),
        Some((b'{', _)) => serde_json::from_slice(payload).map_err(|source| StoreError::Decode {
            table: TABLE,
            key: key.to_string(),
            source,
        }),
        _ => Err(StoreError::Decode {
            table: TABLE,
            key: key.to_string(),
            source: serde::de::Error::custom(format!(
                "unknown record format {:#04x}",
                payload.first().copied().unwrap_or(0)
            )),
        }),
    }
}

fn from_wire(key: &str, bytes: &[u8]) -> Result<TaskRecord, StoreError> {
    let invalid = |reason: String| StoreError::Decode {
        table: TABLE,
        key: key.to_string(),
        source: serde::de::Error::custom(reason),
    };
    let wire: TaskWire<'_> = postcard::from_bytes(bytes).map_err(|source| StoreError::DecodeCompact {
        table: TABLE,
        key: key.to_string(),
        source,
    })?;
    let state = STATES
        .into_iter()
        .find(|s| s.as_str() == wire.state)
        .ok_or_else(|| invalid(format!("unknown task state {:?}", wire.state)))?;
    let app_id = AppId::parse(wire.app_id).map_err(|e| invalid(e.to_string()))?;
    Ok(TaskRecord {
        id: TaskId::new(wire.id),
        app_id,
        version: wire.version.to_string(),
        agent_id: AgentId::new(wire.agent_id),
        host: wire.host.to_string(),
        ports: wire.ports.into_owned(),
        resources: Resources {
            cpus: wire.cpus,
            mem: wire.mem,
            disk: wire.disk,
            ports: PortRanges::new(wire.port_ranges.iter().copied()),
        },
        state,
        staged_at: Timestamp(wire.staged_at),
        started_at: wire.started_at.map(Timestamp),
        updated_at: Timestamp(wire.updated_at),
        kill_requested: wire.kill_requested,
        kill_reason: wire.kill_reason.map(str::to_string),
        drain_since: wire.drain_since.map(Timestamp),
        healthy: wire.healthy,
        message: wire.message.map(str::to_string),
        health: wire.health.as_deref().map(|text| json(key, text)).transpose()?,
        ip_addresses: match wire.ip_addresses.as_deref() {
            Some(text) => json(key, text)?,
            None => Vec::new(),
        },
        ready: wire.ready,
        unreachable_since: wire.unreachable_since.map(Timestamp),
    })
}

fn json<T: for<'de> Deserialize<'de>>(key: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Decode { table: TABLE, key: key.to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full_task() -> TaskRecord {
        TaskRecord {
            id: TaskId::new("web.0b4e6c1e-1111-2222-3333-444455556666"),
            app_id: AppId::parse("/shop/web").unwrap(),
            version: "2026-12-01T20:00:00.000Z".into(),
            agent_id: AgentId::new("agent-7"),
            host: "10.0.0.7".into(),
            ports: vec![31001, 31002],
            resources: Resources { cpus: 0.25, mem: 64.0, disk: 10.0, ports: PortRanges::new([(31001, 31002)]) },
            state: TaskState::TaskRunning,
            staged_at: Timestamp(1_700_000_000_000),
            started_at: Some(Timestamp(1_700_000_000_500)),
            updated_at: Timestamp(1_700_000_001_000),
            kill_requested: true,
            kill_reason: Some("scaled down".into()),
            drain_since: Some(Timestamp(1_700_000_002_000)),
            healthy: Some(false),
            message: Some("health check failed: ünïcode".into()),
            health: Some(json!([{"alive": false, "consecutiveFailures": 3}])),
            ip_addresses: vec![json!({"ipAddress": "10.0.0.7", "protocol": "IPv4"})],
            ready: Some(true),
            unreachable_since: Some(Timestamp(-5)),
        }
    }

    #[test]
    fn every_field_of_a_task_survives_the_compact_form_which_is_much_smaller_than_json() {
        for task in [full_task(), minimal(full_task())] {
            let stored = encode_task("k", &task).unwrap();
            assert_eq!(stored[0], TASK_POSTCARD_V1);
            assert_eq!(decode_task("k", &stored).unwrap(), task);
            let json = serde_json::to_vec(&task).unwrap();
            assert!(stored.len() * 3 < json.len() * 2, "{} bytes compact vs {} JSON", stored.len(), json.len());
        }
    }

    fn minimal(mut task: TaskRecord) -> TaskRecord {
        task.started_at = None;
        task.kill_requested = false;
        task.kill_reason = None;
        task.drain_since = None;
        task.healthy = None;
        task.message = None;
        task.health = None;
        task.ip_addresses = vec![];
        task.ready = None;
        task.unreachable_since = None;
        task.state = TaskState::TaskStaging;
        task
    }

    #[test]
    fn every_task_state_round_trips_by_name() {
        for state in STATES {
            let task = TaskRecord { state, ..full_task() };
            assert_eq!(decode_task("k", &encode_task("k", &task).unwrap()).unwrap().state, state);
        }
    }

    #[test]
    fn a_task_written_as_json_by_the_previous_version_still_reads() {
        let task = full_task();
        let json = serde_json::to_vec(&task).unwrap();
        assert_eq!(decode_task("k", &json).unwrap(), task);
    }

    #[test]
    fn damaged_or_unknown_task_payloads_are_errors_naming_the_record() {
        let mut stored = encode_task("k", &full_task()).unwrap();
        stored.truncate(stored.len() / 2);
        let err = decode_task("web.1", &stored).unwrap_err();
        assert!(err.to_string().contains("tasks record 'web.1'"), "{err}");
        let err = decode_task("web.2", &[0x7f, 1, 2]).unwrap_err();
        assert!(err.to_string().contains("web.2") && matches!(err, StoreError::Decode { .. }), "{err}");
        let mut wrong_state = encode_task("k", &full_task()).unwrap();
        let at = wrong_state.windows(12).position(|w| w == b"TASK_RUNNING").unwrap();
        wrong_state[at..at + 12].copy_from_slice(b"TASK_RUNNINX");
        assert!(decode_task("web.3", &wrong_state).is_err());
        assert!(decode_task("web.4", &[]).is_err());
    }
}
