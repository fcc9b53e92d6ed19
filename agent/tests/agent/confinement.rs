//! Command tasks confined, through a real agent with real executors and real tasks: an
//! app without `user` runs as `nobody` with no capabilities; root needs the operator's
//! `--allow-root-tasks` and then gets Docker's default capabilities; `no_new_privs`
//! always; the agent's work dir (other tasks' `task.json`) and other hidden paths are
//! out of sight even for root; and a task that swaps its logs for symlinks to a
//! root-only file gets none of it served, and the file is never truncated by rotation.
//! Each command task has a PID namespace of its own: another task's processes (and
//! their environment) are out of sight, its COMMAND checks see the task's, and a kill
//! ends its whole process tree.
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

/// The pids (as the node sees them) of every process in the PID namespace of the task's
/// init, the pid its `running.json` names.
fn task_processes(work: &Path, task: &str) -> Vec<i32> {
    let running = std::fs::read_to_string(work.join("tasks").join(task).join("running.json")).unwrap();
    let init = serde_json::from_str::<Value>(&running).unwrap()["pid"].as_i64().unwrap();
    let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let task_namespace = namespace(&init.to_string()).expect("the task's init is running");
    assert_ne!(Some(&task_namespace), namespace("self").as_ref(), "the task has a PID namespace of its own");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| namespace(&pid.to_string()).as_ref() == Some(&task_namespace))
        .collect()
}

/// Whether the process still exists (a zombie waiting to be reaped counts as gone).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_one_user_cannot_see_each_others_processes_and_checks_see_their_tasks() {
    let agent = confined_agent(TaskConfinement::default(), LogPolicy::default()).await;
    let work = agent.work_dir.path().to_path_buf();
    let (keeper, snoop) = (unique("pid-keeper"), unique("pid-snoop"));
    // Healthy only from inside the keeper's PID namespace: its pid 2 is the keeper's
    // command (pid 1 its init), holding the secret.
    let check = r#"[ $$ != 2 ] && tr '\0' '\n' < /proc/2/environ | grep -qx SECRET_TOKEN=pidns-secret-93 &&
        echo "$(cat /proc/1/cmdline | tr '\0' ' ')" > "$MESOS_SANDBOX/check-saw""#;
    agent.run(vec![(
        &keeper,
        json!({"id": "/keeper", "cmd": "sleep 100", "mem": 32, "env": {"SECRET_TOKEN": "pidns-secret-93"},
               "healthChecks": [{"protocol": "COMMAND", "command": {"value": check}, "gracePeriodSeconds": 0,
                                 "intervalSeconds": 1, "timeoutSeconds": 5, "delaySeconds": 0}]}),
    )]);
    wait_until_async("the keeper running", Duration::from_secs(15), || {
        status_of(&agent.m, &keeper, TaskState::TaskRunning)
    })
    .await;
    let keeper_pids = task_processes(&work, &keeper);
    // On the node the secret is there, in a process of the same user.
    let environ = |pid: &i32| std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    assert!(
        keeper_pids.iter().any(|pid| String::from_utf8_lossy(&environ(pid)).contains("pidns-secret-93")),
        "{keeper_pids:?}"
    );

    let snoop_script = r#"echo "me: $$"; echo "procs: $(ls /proc | grep -E '^[0-9]+$' | tr '\n' ' ')";
        for p in $KEEPER_PIDS; do [ -e /proc/$p ] && echo "visible: $p"; tr '\0' '\n' < /proc/$p/environ; done;
        grep -l pidns-secret-93 /proc/[0-9]*/environ; echo end"#;
    let pids = keeper_pids.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
    agent
        .m
        .lock()
        .unwrap()
        .desired
        .as_mut()
        .unwrap()
        .tasks
        .push(spec(&snoop, json!({"id": "/snoop", "cmd": snoop_script, "mem": 32, "env": {"KEEPER_PIDS": pids}})));
    agent.m.lock().unwrap().desired.as_mut().unwrap().generation = 2;
    let stdout = agent.stdout_of_finished(&snoop).await;
    assert!(!stdout.contains("pidns-secret-93"), "{stdout}");
    assert!(!stdout.contains("visible:"), "none of the keeper's pids exists for the snoop: {stdout}");
    // Its shell is pid 2, under its own init; all it sees is itself.
    assert_eq!(field(&stdout, "me"), Some("2"), "{stdout}");
    let procs: Vec<i32> =
        field(&stdout, "procs").unwrap_or_default().split(' ').filter_map(|p| p.parse().ok()).collect();
    assert!(procs.contains(&1) && procs.iter().all(|p| *p < 20), "{stdout}");

    let update = wait_until_async("a health result", Duration::from_secs(20), || {
        agent.m.lock().unwrap().statuses.iter().find(|u| u.task_id.as_str() == keeper && u.healthy.is_some()).cloned()
    })
    .await;
    assert_eq!(update.healthy, Some(true), "{:?}", update.extra.get("healthCheckResults"));
    let saw = std::fs::read_to_string(work.join("tasks").join(&keeper).join("check-saw")).unwrap_or_default();
    assert!(saw.contains("task-init") && saw.contains("sleep 100"), "the check saw the keeper's init as pid 1: {saw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_task_ends_its_whole_process_tree_within_the_grace_period() {
    let agent = confined_agent(TaskConfinement::default(), LogPolicy::default()).await;
    let work = agent.work_dir.path().to_path_buf();
    let task = unique("tree");
    // A child in the task's group, one that left it for a session of its own, and the
    // command itself as a plain `sleep`: no handler for SIGTERM, so as a namespace's
    // PID 1 it would ignore the kill until the grace period's SIGKILL.
    let tree = "sleep 1000 & setsid sleep 1001 & exec sleep 1002";
    agent.run(vec![(&task, json!({"id": "/tree", "cmd": tree, "mem": 32, "taskKillGracePeriodSeconds": 60}))]);
    wait_until_async("the task running", Duration::from_secs(15), || {
        status_of(&agent.m, &task, TaskState::TaskRunning)
    })
    .await;
    let pids = wait_until_async("its four processes", Duration::from_secs(10), || {
        Some(task_processes(&work, &task)).filter(|p| p.len() == 4)
    })
    .await;
    let started = std::time::Instant::now();
    agent.m.lock().unwrap().desired = Some(DesiredState { generation: 2, tasks: vec![] });
    let end = agent.ended(&task).await;
    assert_eq!(end.state, TaskState::TaskKilled, "{end:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "SIGTERM reached the command: {:?}", started.elapsed());
    wait_until_async("every process of the task gone", Duration::from_secs(5), || {
        pids.iter().all(|pid| !alive(*pid)).then_some(())
    })
    .await;
}
