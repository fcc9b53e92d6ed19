//! Read views: Marathon's `taskStats` by version.
use serde_json::json;

use super::*;

#[test]
fn task_stats_split_tasks_by_scaling_and_config_version() {
    let (mut c, id) = running(json!({"id": "web", "cmd": "x", "cpus": 0.1, "instances": 2}));
    let stats = c.task_stats(&id, t(5_003)).expect("the app exists");
    let total = stats.total_summary.clone().expect("two tasks");
    assert_eq!((total.stats.counts.running, total.stats.counts.staged), (2, 0));
    let life = total.stats.life_time.expect("running tasks have a life time");
    assert_eq!((life.average_seconds, life.median_seconds), (5.0, 5.0));
    assert_eq!(stats.with_latest_config, stats.total_summary, "one config so far");
    assert!(stats.with_outdated_config.is_none(), "no group without tasks");

    // A scale: the new task is the only one started after it; the config stays the latest.
    for ms in [5_004, 5_005, 5_006] {
        c.tick(t(ms));
    }
    assert_eq!(c.deployments().count(), 0, "the start is done");
    let mut scaled = AppDefinition::clone(&c.app(&id).unwrap().definition);
    scaled.instances = 3;
    c.put_app(scaled, t(6_000), false).unwrap();
    c.tick(t(6_001));
    let stats = c.task_stats(&id, t(6_500)).unwrap();
    let after = stats.started_after_last_scaling.expect("the new task").stats;
    assert_eq!((after.counts.staged, after.counts.running), (1, 0));
    assert!(after.life_time.is_none(), "a staged task has no life time yet");
    assert_eq!(stats.with_latest_config.unwrap().stats.counts.running, 2);
    assert!(stats.with_outdated_config.is_none());

    // A new config: the old tasks are outdated while the new one starts.
    run_all(&mut c, "web", t(7_000));
    for ms in [7_001, 7_002, 7_003] {
        c.tick(t(ms));
    }
    let mut changed = AppDefinition::clone(&c.app(&id).unwrap().definition);
    changed.cmd = Some("y".into());
    c.put_app(changed, t(8_000), false).unwrap();
    c.tick(t(8_001));
    let stats = c.task_stats(&id, t(9_000)).unwrap();
    let outdated = stats.with_outdated_config.expect("old tasks").stats;
    assert!(outdated.counts.running >= 2, "{outdated:?}");
    let latest = stats.with_latest_config.expect("the new config's tasks").stats;
    assert!(latest.counts.staged >= 1 && latest.counts.running == 0, "{latest:?}");
    let total = stats.total_summary.unwrap().stats.counts;
    assert_eq!(total.running + total.staged, outdated.counts.running + outdated.counts.staged + latest.counts.staged);
    assert!(c.task_stats(&AppId::parse("/nothing").unwrap(), t(9_000)).is_none());
}
