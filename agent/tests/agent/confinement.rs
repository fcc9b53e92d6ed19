//! Command tasks confined, through a real agent with real executors and real tasks: an
//! app without `user` runs as `nobody` with no capabilities; root needs the operator's
//! `--allow-root-tasks` and then gets Docker's default capabilities; `no_new_privs`
//! always; the agent's work dir (other tasks' `task.json`) and other hidden paths are
//! out of sight even for root; and a task that swaps its logs for symlinks to a
//! root-only file gets none of it served, and the file is never truncated by rotation.
use crate::common::*;
use plinth_agent::logs::LogPolicy;
use plinth_agent::TaskConfinement;
use plinth_protocol::agent::{DesiredState, StatusUpdate};
use plinth_protocol::{TaskState, Timestamp};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// CapEff of a root process in a default Docker container.
const DOCKER_DEFAULT_CAPS: &str = "00000000a80425fb";
const NO_CAPS: &str = "0000000000000000";
/// What a task prints about itself: uid, then its capability sets and no_new_privs.
const WHO_AM_I: &str = "id -u; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status";

/// A real agent on its own work dir; fields drop in order, tasks first.
struct Confined {
    m: Shared,
    agent: Agent,
    _cleanup: KillTasksOnDrop,
    work_dir: tempfile::TempDir,
}

async fn confined_agent(confinement: TaskConfinement, logs: LogPolicy) -> Confined {
    assert!(nix::unistd::geteuid().is_root(), "confinement tests need root (users, namespaces, mounts)");
    let (master, m) = start_master().await;
    let work_dir = tempfile::tempdir().unwrap();
    let cleanup = KillTasksOnDrop(work_dir.path().to_path_buf());
    let agent = start_confined_agent(&master, work_dir.path().to_path_buf(), free_port(), confinement, logs);
    wait_until_async("registration", Duration::from_secs(10), || m.lock().unwrap().registrations.first().cloned())
        .await;
    Confined { m, agent, _cleanup: cleanup, work_dir }
}

impl Confined {
    fn run(&self, tasks: Vec<(&str, Value)>) {
        let tasks = tasks.into_iter().map(|(id, app)| spec(id, app)).collect();
        self.m.lock().unwrap().desired = Some(DesiredState { generation: 1, tasks });
    }

    async fn ended(&self, task: &str) -> StatusUpdate {
        wait_until_async(&format!("{task} to end"), Duration::from_secs(30), || {
            self.m
                .lock()
                .unwrap()
                .statuses
                .iter()
                .find(|u| u.task_id.as_str() == task && u.state.is_terminal())
                .cloned()
        })
        .await
    }

    async fn log(&self, task: &str, query: &str) -> (u16, String) {
        plinth_oci::tls::install_provider();
        let response = reqwest::get(format!("{}/v1/tasks/{task}/logs?{query}", self.agent.api)).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn stdout_of_finished(&self, task: &str) -> String {
        let end = self.ended(task).await;
        let (status, stdout) = self.log(task, "stream=stdout").await;
        assert_eq!(end.state, TaskState::TaskFinished, "{task}: {end:?}; stdout: {stdout}");
        assert_eq!(status, 200);
        stdout
    }
}

/// Task ids unique to this run: task cgroups are named after them.
fn unique(name: &str) -> String {
    format!("confine-{name}.{}-{}", std::process::id(), Timestamp::now().millis())
}

fn field<'a>(stdout: &'a str, name: &str) -> Option<&'a str> {
    stdout.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

fn nobody_uid() -> String {
    nix::unistd::User::from_name("nobody").unwrap().expect("a 'nobody' user").uid.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_user_runs_as_nobody_without_capabilities() {
    let agent = confined_agent(TaskConfinement::default(), LogPolicy::default()).await;
    let task = unique("nobody");
    agent.run(vec![(&task, json!({"id": "/who", "cmd": WHO_AM_I, "mem": 32}))]);
    let stdout = agent.stdout_of_finished(&task).await;
    assert_eq!(stdout.lines().next(), Some(nobody_uid().as_str()), "{stdout}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(&stdout, set), Some(NO_CAPS), "{set}: {stdout}");
    }
    assert_eq!(field(&stdout, "NoNewPrivs"), Some("1"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_is_refused_unless_the_agent_allows_it_and_then_gets_dockers_capabilities() {
    let refusing = confined_agent(TaskConfinement::default(), LogPolicy::default()).await;
    let task = unique("root-refused");
    refusing.run(vec![(&task, json!({"id": "/root", "cmd": "echo ran", "user": "root", "mem": 32}))]);
    let end = refusing.ended(&task).await;
    assert_eq!(end.state, TaskState::TaskFailed, "{end:?}");
    let message = end.message.unwrap_or_default();
    assert!(message.contains("'root'") && message.contains("--allow-root-tasks"), "{message}");
    assert_ne!(refusing.log(&task, "").await.1, "ran\n", "the command never ran");

    let allowing =
        confined_agent(TaskConfinement { allow_root: true, ..Default::default() }, LogPolicy::default()).await;
    let task = unique("root-allowed");
    allowing.run(vec![(&task, json!({"id": "/root", "cmd": WHO_AM_I, "user": "root", "mem": 32}))]);
    let stdout = allowing.stdout_of_finished(&task).await;
    assert_eq!(stdout.lines().next(), Some("0"), "{stdout}");
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(field(&stdout, set), Some(DOCKER_DEFAULT_CAPS), "{set}: {stdout}");
    }
    assert_eq!(field(&stdout, "CapInh"), Some(NO_CAPS), "{stdout}");
    assert_eq!(field(&stdout, "CapAmb"), Some(NO_CAPS), "{stdout}");
    assert_eq!(field(&stdout, "NoNewPrivs"), Some("1"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_cannot_see_the_work_dir_other_tasks_or_hidden_paths_even_as_root() {
    // Stands for a standalone node's master data dir: hidden by the agent's configuration.
    let master_data = tempfile::tempdir().unwrap();
    std::fs::write(master_data.path().join("store.redb"), "master-secret-77").unwrap();
    let confinement = TaskConfinement {
        allow_root: true,
        hidden_paths: vec![master_data.path().to_path_buf()],
        ..Default::default()
    };
    let agent = confined_agent(confinement, LogPolicy::default()).await;
    let work = agent.work_dir.path().to_path_buf();
    let (keeper, snoop) = (unique("keeper"), unique("snoop"));
    let snoop_script = r#"echo "work: $(ls -A "$WORK" | tr '\n' ' ')"; echo "tasks: $(ls -A "$WORK/tasks")";
        cat "$WORK/tasks/$KEEPER/task.json"; cat "$MASTER/store.redb"; echo "master: $(ls -A "$MASTER")";
        echo "sandbox: $(pwd) $(ls -A "$MESOS_SANDBOX" | tr '\n' ' ')"; echo mine > "$MESOS_SANDBOX/own.txt""#;
    agent.run(vec![
        (&keeper, json!({"id": "/keeper", "cmd": "sleep 100", "mem": 32, "env": {"API_KEY": "sesame-env-42"}})),
        (
            &snoop,
            json!({"id": "/snoop", "cmd": snoop_script, "user": "root", "mem": 32,
                   "env": {"WORK": work.display().to_string(), "KEEPER": keeper,
                           "MASTER": master_data.path().display().to_string()}}),
        ),
    ]);
    wait_until_async("the keeper running", Duration::from_secs(15), || {
        status_of(&agent.m, &keeper, TaskState::TaskRunning)
    })
    .await;
    let end = agent.ended(&snoop).await;
    let (_, stdout) = agent.log(&snoop, "stream=stdout").await;
    let (_, stderr) = agent.log(&snoop, "stream=stderr").await;
    // On the node the secrets are there: the task just cannot see them.
    let keeper_spec = std::fs::read_to_string(work.join("tasks").join(&keeper).join("task.json")).unwrap();
    assert!(keeper_spec.contains("sesame-env-42"));
    assert!(!stdout.contains("sesame-env-42") && !stdout.contains("master-secret-77"), "{stdout}");
    assert_eq!(field(&stdout, "work"), Some("tasks"), "only the way to its own sandbox: {stdout}");
    assert_eq!(field(&stdout, "tasks"), Some(snoop.as_str()), "no other task's sandbox: {stdout}");
    assert_eq!(field(&stdout, "master"), Some(""), "the master's data dir is empty: {stdout}");
    let sandbox = work.join("tasks").join(&snoop);
    let listed = field(&stdout, "sandbox").unwrap_or_default();
    assert!(listed.starts_with(&sandbox.display().to_string()) && listed.contains("stdout"), "{stdout}");
    assert_eq!(std::fs::read_to_string(sandbox.join("own.txt")).unwrap(), "mine\n", "its sandbox is the real one");
    assert!(stderr.contains("No such file"), "{stderr}");
    // `cat` of the missing files failed: the script's last command succeeded.
    assert_eq!(end.state, TaskState::TaskFinished, "{end:?}");
}

/// A root-only file with known content, bigger than the rotation threshold.
fn root_only_file(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("root-only");
    let content = "ROOT-ONLY-SECRET-LINE\n".repeat(3000).into_bytes();
    std::fs::write(&path, &content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (path, content)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_swapped_for_symlinks_are_neither_served_nor_truncated_by_rotation() {
    let secret_dir = tempfile::tempdir().unwrap();
    let (secret, content) = root_only_file(secret_dir.path());
    let policy = LogPolicy { max_bytes: 16 * 1024, generations: 2 };
    let agent = confined_agent(TaskConfinement { allow_root: true, ..Default::default() }, policy).await;
    // Each writes 40 KB (over the 16 KB cap) after trying the swap, then lives long
    // enough for the executor's once-a-second rotation.
    let swap = "ln -sf \"$SECRET\" stdout; ln -sf \"$SECRET\" stderr; echo \"swap: $?\" >&2";
    let write = "head -c 40000 /dev/zero | tr '\\0' w; sleep 3";
    let (as_nobody, as_root) = (unique("swap-nobody"), unique("swap-root"));
    let env = json!({"SECRET": secret.display().to_string()});
    agent.run(vec![
        (&as_nobody, json!({"id": "/swap", "cmd": format!("{swap}; {write}"), "env": env, "mem": 32})),
        // Root may remove what it does not own; its descriptors still point at its logs.
        (
            &as_root,
            json!({"id": "/swap-root", "cmd": format!("rm -f stdout stderr; {swap}; {write}"), "env": env,
                   "user": "root", "mem": 32}),
        ),
    ]);
    for task in [&as_nobody, &as_root] {
        let end = agent.ended(task).await;
        assert_eq!(end.state, TaskState::TaskFinished, "{task}: {end:?}");
    }
    let unchanged = std::fs::read(&secret).unwrap();
    assert!(unchanged == content, "the root-only file kept its {} bytes, now {}", content.len(), unchanged.len());

    // The task that is not root could not even replace its logs (root's, in a sticky dir).
    let (status, stderr) = agent.log(&as_nobody, "stream=stderr").await;
    assert_eq!(status, 200);
    assert!(stderr.contains("swap: 1") && !stderr.contains("ROOT-ONLY"), "{stderr}");
    let (status, stdout) = agent.log(&as_nobody, "stream=stdout").await;
    assert_eq!(status, 200);
    assert!(!stdout.contains("ROOT-ONLY") && stdout.len() <= 40_000, "its own output only");

    // The root task's log names are links now: refused, in a plain read and in a follow.
    for query in ["stream=stdout", "stream=stderr", "stream=stdout&follow=true", "stream=stderr&offset=3"] {
        let (status, body) = agent.log(&as_root, query).await;
        assert_eq!(status, 403, "{query}: {body}");
        let message: Value = serde_json::from_str(&body).unwrap();
        assert!(message["message"].as_str().unwrap().contains("not a regular file"), "{body}");
        assert!(!body.contains("ROOT-ONLY"));
    }
    // Rotation did happen, through the executor's handle on the task's real log.
    let sandbox = agent.work_dir.path().join("tasks").join(&as_root);
    let rotated = std::fs::read(sandbox.join("stdout.1")).unwrap();
    assert!(!rotated.is_empty() && rotated.iter().all(|b| *b == b'w'), "the task's own bytes were rotated");
    assert_eq!(std::fs::read(&secret).unwrap(), content, "still untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_health_checks_run_confined_like_their_task() {
    let agent = confined_agent(TaskConfinement { allow_root: true, ..Default::default() }, LogPolicy::default()).await;
    let work = agent.work_dir.path().display().to_string();
    // Healthy only where the task itself stands: the work dir shows nothing but the way
    // to its sandbox, and root holds Docker's capabilities, no more.
    let check =
        format!(r#"[ "$(ls -A "{work}")" = tasks ] && grep -q "CapEff:.{DOCKER_DEFAULT_CAPS}" /proc/self/status"#);
    let task = unique("checked");
    agent.run(vec![(
        &task,
        json!({"id": "/checked", "cmd": "sleep 100", "user": "root", "mem": 32,
               "healthChecks": [{"protocol": "COMMAND", "command": {"value": check}, "gracePeriodSeconds": 0,
                                 "intervalSeconds": 1, "timeoutSeconds": 5, "delaySeconds": 0}]}),
    )]);
    let update = wait_until_async("a health result", Duration::from_secs(20), || {
        agent.m.lock().unwrap().statuses.iter().find(|u| u.task_id.as_str() == task && u.healthy.is_some()).cloned()
    })
    .await;
    assert_eq!(update.healthy, Some(true), "{:?}", update.extra.get("healthCheckResults"));
}
