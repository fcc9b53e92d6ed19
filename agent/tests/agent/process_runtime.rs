//! Real command tasks through `ProcessRuntime` and the executor (the crate's
//! `plinth-agent-executor` binary, which runs the same code as `plinth executor`).
//! Run as root for cgroup limits; every test removes the processes and cgroups it made,
//! also when it fails.
use plinth_agent::reconciler::{self, REASON_MEMORY};
use plinth_agent::runtime::{ExecutorCommand, LaunchRequest, Observation, ProcessRuntime, RuntimeHandle, TaskRuntime};
use plinth_agent::state::TaskRecord;
use plinth_agent::taskenv::task_env;
use plinth_agent::testing::task_spec;
use plinth_agent::TaskConfinement;
use plinth_protocol::agent::TaskSpec;
use plinth_protocol::{TaskState, Timestamp};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

fn runtime() -> ProcessRuntime {
    ProcessRuntime::new(ExecutorCommand::new(env!("CARGO_BIN_EXE_plinth-agent-executor"), vec![]))
}

/// A launched task that is killed and cleaned up when the test ends, however it ends.
struct Launched {
    runtime: ProcessRuntime,
    handle: RuntimeHandle,
    spec: TaskSpec,
    _dir: tempfile::TempDir,
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.runtime.force_kill(&self.handle);
        let _ = self.runtime.cleanup(&self.handle);
    }
}

fn unique_id(name: &str) -> String {
    format!("test-{name}.{}-{}", std::process::id(), Timestamp::now().millis())
}

fn launch(name: &str, app: serde_json::Value) -> Launched {
    launch_with_logs(name, app, Default::default())
}

fn launch_with_logs(name: &str, app: serde_json::Value, logs: plinth_agent::logs::LogPolicy) -> Launched {
    launch_confined(name, app, logs, TaskConfinement::default())
}

/// Launches with `confinement`, the test's directory (the "work dir") hidden from the task.
fn launch_confined(
    name: &str,
    app: serde_json::Value,
    logs: plinth_agent::logs::LogPolicy,
    mut confinement: TaskConfinement,
) -> Launched {
    let dir = tempfile::tempdir().expect("tempdir");
    confinement.hidden_paths.insert(0, dir.path().to_path_buf());
    let spec = task_spec(&unique_id(name), app, vec![31005]);
    let sandbox = dir.path().join("sandbox");
    let runtime = runtime();
    let request = LaunchRequest {
        env: task_env(&spec, "test-host", &sandbox),
        spec: spec.clone(),
        sandbox,
        logs,
        fetch_cache: None,
        container: None,
        confinement,
        notify_socket: None,
    };
    let handle = runtime.launch(&request).expect("launch");
    Launched { runtime, handle, spec, _dir: dir }
}

fn wait_for(launched: &Launched, timeout: Duration, done: impl Fn(&Observation) -> bool) -> Observation {
    let deadline = Instant::now() + timeout;
    loop {
        let observation = launched.runtime.poll(&launched.handle);
        if done(&observation) || Instant::now() > deadline {
            return observation;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_exit(launched: &Launched, timeout: Duration) -> Observation {
    wait_for(launched, timeout, |o| matches!(o, Observation::Exited(_) | Observation::Gone { .. }))
}

fn wait_running(launched: &Launched) -> i32 {
    match wait_for(launched, Duration::from_secs(10), |o| !matches!(o, Observation::Starting)) {
        Observation::Running { pid: Some(pid) } => pid,
        other => panic!("task did not start: {other:?}"),
    }
}

/// The state the agent would report for this observation.
fn reported(launched: &Launched, observation: &Observation, killing: bool) -> reconciler::Transition {
    let mut record = TaskRecord::new(launched.spec.clone(), launched.handle.sandbox.clone(), Timestamp(0));
    record.state = TaskState::TaskRunning;
    record.kill_requested_at = killing.then_some(Timestamp(1));
    reconciler::observe(&record, observation).expect("a terminal observation changes the state")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn a_task_runs_writes_its_logs_and_finishes() {
    let launched = launch(
        "finish",
        json!({"id": "/hello", "cmd": "echo hello $PORT0 $MESOS_TASK_ID; echo oops >&2; pwd", "mem": 64, "cpus": 0.1}),
    );
    let observation = wait_for_exit(&launched, Duration::from_secs(10));
    let Observation::Exited(termination) = &observation else { panic!("did not exit: {observation:?}") };
    assert_eq!(termination.code, Some(0));
    let transition = reported(&launched, &observation, false);
    assert_eq!(transition.state, TaskState::TaskFinished);
    assert_eq!(transition.exit_code, Some(0));
    let sandbox = &launched.handle.sandbox;
    let stdout = read(&sandbox.join("stdout"));
    assert!(stdout.contains(&format!("hello 31005 {}", launched.spec.task_id)), "stdout: {stdout}");
    assert!(stdout.contains(sandbox.to_str().expect("utf-8 path")), "cwd is the sandbox: {stdout}");
    assert_eq!(read(&sandbox.join("stderr")), "oops\n");
}

#[test]
fn a_failing_task_reports_its_exit_code() {
    let launched = launch("fail", json!({"id": "/fail", "args": ["/bin/sh", "-c", "exit 3"], "mem": 0}));
    let observation = wait_for_exit(&launched, Duration::from_secs(10));
    let transition = reported(&launched, &observation, false);
    assert_eq!(transition.state, TaskState::TaskFailed);
    assert_eq!(transition.exit_code, Some(3));
    assert_eq!(transition.message.as_deref(), Some("Command exited with status 3"));
}

#[test]
fn a_missing_program_fails_with_a_clear_message() {
    let launched = launch("missing", json!({"id": "/missing", "args": ["/no/such/program"]}));
    let observation = wait_for_exit(&launched, Duration::from_secs(10));
    let transition = reported(&launched, &observation, false);
    assert_eq!(transition.state, TaskState::TaskFailed);
    let message = transition.message.expect("message");
    assert!(message.contains("/no/such/program"), "{message}");
}

#[test]
fn a_killed_task_ends_within_its_grace_period() {
    let launched = launch("kill", json!({"id": "/sleepy", "cmd": "sleep 100", "taskKillGracePeriodSeconds": 3}));
    let pid = wait_running(&launched);
    let started = Instant::now();
    launched.runtime.kill(&launched.handle, Duration::from_secs(3)).expect("kill");
    let observation = wait_for_exit(&launched, Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(3), "SIGTERM alone should end sleep");
    let Observation::Exited(termination) = &observation else { panic!("not killed: {observation:?}") };
    assert!(termination.killed);
    assert_eq!(reported(&launched, &observation, true).state, TaskState::TaskKilled);
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the task process is gone");
}

#[test]
fn a_task_ignoring_sigterm_is_killed_after_the_grace_period() {
    let launched = launch(
        "stubborn",
        json!({"id": "/stubborn", "cmd": "trap '' TERM; echo ready; while true; do sleep 0.1; done", "taskKillGracePeriodSeconds": 1}),
    );
    wait_running(&launched);
    // Wait for the trap to be in place.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read(&launched.handle.sandbox.join("stdout")).contains("ready") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    launched.runtime.kill(&launched.handle, Duration::from_secs(1)).expect("kill");
    let observation = wait_for_exit(&launched, Duration::from_secs(10));
    let elapsed = started.elapsed();
    let Observation::Exited(termination) = &observation else { panic!("not killed: {observation:?}") };
    assert_eq!(termination.signal, Some(9), "SIGKILL after the grace period");
    assert!(termination.killed);
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[test]
fn a_memory_hog_is_reported_as_oom_killed() {
    if !is_root() {
        eprintln!("skipped: cgroup memory limits need root");
        return;
    }
    // `tail` keeps the whole newline-free stream in memory: far beyond 32 MB.
    let launched = launch("oom", json!({"id": "/hog", "cmd": "head -c 500000000 /dev/zero | tail", "mem": 32}));
    assert!(launched.handle.cgroup.is_some(), "running as root, the task gets a cgroup");
    let observation = wait_for_exit(&launched, Duration::from_secs(30));
    let Observation::Exited(termination) = &observation else { panic!("no exit: {observation:?}") };
    assert!(termination.oom, "OOM kill not detected: {termination:?}");
    let transition = reported(&launched, &observation, false);
    assert_eq!(transition.state, TaskState::TaskFailed);
    assert_eq!(transition.reason, Some(REASON_MEMORY));
    assert!(transition.message.expect("message").contains("OOM-killed"));
}

#[test]
fn limits_are_applied_and_the_cgroup_is_removed_afterwards() {
    if !is_root() {
        eprintln!("skipped: cgroups need root");
        return;
    }
    let launched = launch("limits", json!({"id": "/limited", "cmd": "sleep 100", "mem": 48, "cpus": 0.5}));
    let pid = wait_running(&launched);
    let cgroup = launched.handle.cgroup.clone().expect("cgroup");
    let procs = plinth_agent::cgroup::procs(&cgroup.dirs);
    assert!(procs.contains(&pid), "task {pid} is in its cgroup: {procs:?}");
    let executor = launched.handle.pid.expect("executor pid");
    assert!(!procs.contains(&executor), "the executor stays outside the task's limits");
    let limit = cgroup.dirs.iter().find_map(|d| {
        std::fs::read_to_string(d.join("memory.limit_in_bytes"))
            .or_else(|_| std::fs::read_to_string(d.join("memory.max")))
            .ok()
    });
    assert_eq!(limit.as_deref().map(str::trim), Some("50331648"));
    launched.runtime.kill(&launched.handle, Duration::from_secs(3)).expect("kill");
    wait_for_exit(&launched, Duration::from_secs(10));
    launched.runtime.cleanup(&launched.handle).expect("cleanup");
    assert!(cgroup.dirs.iter().all(|d| !d.exists()), "cgroup removed");
}

#[test]
fn a_new_runtime_re_adopts_a_running_task_from_its_checkpoint() {
    let launched = launch("adopt", json!({"id": "/adopt", "cmd": "echo started; sleep 100"}));
    let pid = wait_running(&launched);
    // What a restarted agent has: the checkpointed handle, possibly without the pid.
    let checkpointed = RuntimeHandle::unresolved(launched.handle.task_id.clone(), launched.handle.sandbox.clone());
    let fresh = runtime();
    let recovered = fresh.recover(&checkpointed);
    assert_eq!(recovered.pid, launched.handle.pid, "the executor is found through the sandbox");
    assert_eq!(recovered.cgroup, launched.handle.cgroup);
    assert_eq!(fresh.poll(&recovered), Observation::Running { pid: Some(pid) }, "same task, still running");
    let recovered_full = fresh.recover(&launched.handle);
    assert_eq!(recovered_full, launched.handle);
    fresh.kill(&recovered, Duration::from_secs(3)).expect("kill through the new runtime");
    let observation = wait_for_exit(&launched, Duration::from_secs(10));
    assert!(matches!(observation, Observation::Exited(ref t) if t.killed), "{observation:?}");
}

#[test]
fn an_executor_killed_outright_is_reported_gone_and_takes_its_task_along() {
    let launched = launch("gone", json!({"id": "/gone", "cmd": "sleep 100"}));
    let pid = wait_running(&launched);
    let executor = launched.handle.pid.expect("executor pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(executor), nix::sys::signal::Signal::SIGKILL)
        .expect("kill executor");
    let observation = wait_for_exit(&launched, Duration::from_secs(10));
    assert!(matches!(observation, Observation::Gone { .. }), "{observation:?}");
    assert_eq!(reported(&launched, &observation, false).state, TaskState::TaskFailed);
    let deadline = Instant::now() + Duration::from_secs(5);
    while plinth_agent_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!plinth_agent_alive(pid), "the orphaned task died with its executor");
}

fn plinth_agent_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn a_task_runs_as_the_apps_user() {
    if !is_root() || nix::unistd::User::from_name("nobody").ok().flatten().is_none() {
        eprintln!("skipped: needs root and a 'nobody' user");
        return;
    }
    let launched = launch("user", json!({"id": "/as-nobody", "cmd": "id -u; echo written > file", "user": "nobody"}));
    let observation = wait_for_exit(&launched, Duration::from_secs(10));
    assert_eq!(reported(&launched, &observation, false).state, TaskState::TaskFinished, "{observation:?}");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(read(&launched.handle.sandbox.join("stdout")).trim(), nobody.uid.to_string());
}

#[test]
fn an_unknown_user_fails_the_task_with_the_reason() {
    let launched = launch("nouser", json!({"id": "/nouser", "cmd": "true", "user": "no-such-user-here"}));
    let observation = wait_for_exit(&launched, Duration::from_secs(10));
    let transition = reported(&launched, &observation, false);
    assert_eq!(transition.state, TaskState::TaskFailed);
    let message = transition.message.expect("message");
    assert!(message.contains("no-such-user-here") && message.contains("no such user"), "{message}");
}

#[test]
fn the_executor_rotates_big_logs() {
    let policy = plinth_agent::logs::LogPolicy { max_bytes: 64 * 1024, generations: 2 };
    // ~200 KB in 20 KB bursts, slow enough for the executor's once-a-second check.
    let launched = launch_with_logs(
        "rotate",
        json!({"id": "/chatty", "cmd": "for i in $(seq 10); do head -c 20000 /dev/zero | tr '\\0' x; sleep 0.3; done"}),
        policy,
    );
    let observation = wait_for_exit(&launched, Duration::from_secs(20));
    assert_eq!(reported(&launched, &observation, false).state, TaskState::TaskFinished, "{observation:?}");
    let sandbox = &launched.handle.sandbox;
    let size = |name: &str| std::fs::metadata(sandbox.join(name)).map(|m| m.len()).unwrap_or(0);
    assert!(size("stdout.1") > 0, "rotated at least once");
    assert!(size("stdout") <= 64 * 1024 + 20_000, "current log stays near the cap: {}", size("stdout"));
    assert!(!sandbox.join("stdout.3").exists());
}
