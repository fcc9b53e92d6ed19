//! What a command task is started with: its command line and its environment, built
//! exactly as Marathon/Mesos do so existing apps (`python3 -m http.server $PORT0`) work.
use plinth_protocol::agent::TaskSpec;
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::AgentError;

/// PATH for tasks: the agent's own environment is not passed on (it may hold tokens).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How to start the task: `cmd` goes through the shell, `args` are exec'd as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskCommand {
    Shell(String),
    Exec(Vec<String>),
}

impl TaskCommand {
    pub fn for_spec(spec: &TaskSpec) -> Result<Self, AgentError> {
        let no_command = || AgentError::NoCommand { task_id: spec.task_id.to_string() };
        match (&spec.app.cmd, &spec.app.args) {
            (Some(cmd), _) if !cmd.trim().is_empty() => Ok(TaskCommand::Shell(cmd.clone())),
            (_, Some(args)) if !args.is_empty() => Ok(TaskCommand::Exec(args.clone())),
            _ => Err(no_command()),
        }
    }

    /// Program and arguments to exec.
    pub fn argv(&self) -> Vec<String> {
        match self {
            TaskCommand::Shell(cmd) => vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
            TaskCommand::Exec(args) => args.clone(),
        }
    }
}

/// The task's environment: a minimal base, the app's `env`, then the variables Marathon
/// and Mesos define (these win, as in Marathon, so `PORT0` always tells the truth).
pub fn task_env(spec: &TaskSpec, host: &str, sandbox: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |name: String, value: String| {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    };
    set("PATH".into(), DEFAULT_PATH.into());
    set("HOME".into(), sandbox.display().to_string());
    for (name, value) in &spec.app.env {
        // Validation only lets strings through; anything else is skipped, not stringified.
        if let Some(value) = value.as_str() {
            set(name.clone(), value.to_string());
        }
    }
    let ports = &spec.host_ports;
    for (index, port) in ports.iter().enumerate() {
        set(format!("PORT{index}"), port.to_string());
    }
    if let Some(first) = ports.first() {
        set("PORT".into(), first.to_string());
    }
    set("PORTS".into(), ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","));
    for (name, port) in spec.app.port_names().iter().zip(ports) {
        if let Some(name) = name.as_deref().filter(|n| !n.is_empty()) {
            set(format!("PORT_{}", env_name(name)), port.to_string());
        }
    }
    // Marathon also exposes each requested (service) port number: PORT_10000=31002.
    for (definition, port) in spec.app.port_definitions.iter().flatten().zip(ports) {
        if definition.port > 0 {
            set(format!("PORT_{}", definition.port), port.to_string());
        }
    }
    set("HOST".into(), host.to_string());
    set("MARATHON_APP_ID".into(), spec.app_id.to_string());
    set("MARATHON_APP_VERSION".into(), spec.version.clone());
    set("MARATHON_APP_RESOURCE_CPUS".into(), spec.app.cpus.to_string());
    set("MARATHON_APP_RESOURCE_MEM".into(), spec.app.mem.to_string());
    set("MARATHON_APP_RESOURCE_DISK".into(), spec.app.disk.to_string());
    set("MESOS_TASK_ID".into(), spec.task_id.to_string());
    set("MESOS_SANDBOX".into(), sandbox.display().to_string());
    env
}

/// `my-port.http` → `MY_PORT_HTTP`: what a shell accepts as a variable name.
fn env_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) use crate::testing::task_spec as spec_from;

    fn lookup<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn env_has_ports_names_and_marathon_variables() {
        let spec = spec_from(
            "web.1",
            json!({"id": "/prod/web", "cmd": "serve", "env": {"GREETING": "hi", "PORT0": "spoofed"},
                   "portDefinitions": [{"port": 10000, "name": "http"}, {"port": 0, "name": "admin-ui"}]}),
            vec![31000, 31001],
        );
        let env = task_env(&spec, "node-1", Path::new("/sb"));
        assert_eq!(lookup(&env, "GREETING"), Some("hi"));
        assert_eq!(lookup(&env, "PORT0"), Some("31000"));
        assert_eq!(lookup(&env, "PORT1"), Some("31001"));
        assert_eq!(lookup(&env, "PORT"), Some("31000"));
        assert_eq!(lookup(&env, "PORTS"), Some("31000,31001"));
        assert_eq!(lookup(&env, "PORT_HTTP"), Some("31000"));
        assert_eq!(lookup(&env, "PORT_ADMIN_UI"), Some("31001"));
        assert_eq!(lookup(&env, "PORT_10000"), Some("31000"));
        assert_eq!(lookup(&env, "HOST"), Some("node-1"));
        assert_eq!(lookup(&env, "MARATHON_APP_ID"), Some("/prod/web"));
        assert_eq!(lookup(&env, "MARATHON_APP_VERSION"), Some("2024-01-01T00:00:00.000Z"));
        assert_eq!(lookup(&env, "MESOS_TASK_ID"), Some("web.1"));
        assert_eq!(lookup(&env, "MESOS_SANDBOX"), Some("/sb"));
        assert_eq!(env.iter().filter(|(n, _)| n == "PORT0").count(), 1, "no duplicate names");
    }

    #[test]
    fn app_without_ports_gets_empty_ports_and_no_port() {
        let spec = spec_from("t.1", json!({"id": "a", "cmd": "x", "portDefinitions": []}), vec![]);
        let env = task_env(&spec, "h", Path::new("/sb"));
        assert_eq!(lookup(&env, "PORTS"), Some(""));
        assert_eq!(lookup(&env, "PORT"), None);
    }

    #[test]
    fn cmd_uses_the_shell_and_args_are_exec_form() {
        let shell = spec_from("t.1", json!({"id": "a", "cmd": "echo $HOME"}), vec![]);
        assert_eq!(TaskCommand::for_spec(&shell).unwrap().argv(), vec!["/bin/sh", "-c", "echo $HOME"]);
        let exec = spec_from("t.2", json!({"id": "a", "args": ["sleep", "5"]}), vec![]);
        assert_eq!(TaskCommand::for_spec(&exec).unwrap().argv(), vec!["sleep", "5"]);
        let none = spec_from("t.3", json!({"id": "a", "container": {"docker": {"image": "x"}}}), vec![]);
        assert!(matches!(TaskCommand::for_spec(&none), Err(AgentError::NoCommand { .. })));
    }
}
