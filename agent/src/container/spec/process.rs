//! The container's process: argv (Entrypoint, Cmd, `cmd`, `args`), environment, working
//! directory, hostname and user as `docker run` sets them, and the
//! `container.docker.parameters` that change them.
use oci_spec::image::ImageConfiguration;
use plinth_protocol::AppDefinition;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::{security, SpecInput, SANDBOX_IN_CONTAINER};
use crate::container::ContainerError;

/// Docker's PATH for images that set none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `container.docker.parameters` Plinth understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerParameters {
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
}

pub const SUPPORTED_PARAMETERS: &str = "env, label, user, workdir, hostname";

/// Parses the app's Docker parameters; an unknown or malformed one fails the task.
pub fn docker_parameters(app: &AppDefinition) -> Result<DockerParameters, ContainerError> {
    let mut out = DockerParameters::default();
    let Some(docker) = app.container.as_ref().and_then(|c| c.docker.as_ref()) else { return Ok(out) };
    for parameter in &docker.parameters {
        let bad = |reason: &str| ContainerError::Parameter { key: parameter.key.clone(), reason: reason.to_string() };
        let value = parameter.value.as_str();
        match parameter.key.trim_start_matches('-') {
            "env" | "e" => {
                let (name, val) = value.split_once('=').ok_or_else(|| bad("expected NAME=VALUE"))?;
                if name.is_empty() {
                    return Err(bad("expected NAME=VALUE"));
                }
                out.env.push((name.to_string(), val.to_string()));
            }
            "label" | "l" => {
                let (name, val) = value.split_once('=').unwrap_or((value, ""));
                if name.is_empty() {
                    return Err(bad("expected KEY=VALUE"));
                }
                out.labels.insert(name.to_string(), val.to_string());
            }
            "user" | "u" => out.user = Some(value.to_string()).filter(|v| !v.is_empty()),
            "workdir" | "w" => {
                if !value.starts_with('/') {
                    return Err(bad("the working directory must be an absolute path"));
                }
                out.workdir = Some(value.to_string());
            }
            "hostname" | "h" => {
                if value.is_empty()
                    || value.len() > 63
                    || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    return Err(bad("not a valid hostname"));
                }
                out.hostname = Some(value.to_string());
            }
            _ => {
                return Err(bad(&format!("not supported by Plinth (supported: {SUPPORTED_PARAMETERS})")));
            }
        }
    }
    Ok(out)
}

/// The user the container runs as: the `user` parameter, else the image's `User`.
/// (The app's own `user` names an agent account; Docker tasks ignore it, as Mesos's
/// Docker containerizer does.)
pub fn effective_user(params: &DockerParameters, image: &ImageConfiguration) -> Option<String> {
    params.user.clone().or_else(|| image.config().as_ref().and_then(|c| c.user().clone())).filter(|u| !u.is_empty())
}

/// The container's hostname: the `hostname` parameter, else the task id made into a
/// valid host name (letters, digits, `-`; at most 63 characters).
pub fn hostname(task_id: &str, params: &DockerParameters) -> String {
    if let Some(name) = &params.hostname {
        return name.clone();
    }
    let cleaned: String = task_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let trimmed: String = cleaned.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-').to_string();
    if trimmed.is_empty() {
        "task".to_string()
    } else {
        trimmed
    }
}

/// The process's argv with Docker's (and Mesos's) rules: `cmd` runs through
/// `/bin/sh -c` and replaces the image's Entrypoint and Cmd; `args` replace Cmd and keep
/// the Entrypoint; otherwise Entrypoint + Cmd.
pub fn process_args(app: &AppDefinition, image: &ImageConfiguration) -> Result<Vec<String>, ContainerError> {
    let config = image.config().as_ref();
    let entrypoint = config.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
    let image_cmd = config.and_then(|c| c.cmd().clone()).unwrap_or_default();
    let args = if let Some(cmd) = app.cmd.as_deref().filter(|c| !c.trim().is_empty()) {
        vec!["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()]
    } else if let Some(args) = app.args.as_ref().filter(|a| !a.is_empty()) {
        entrypoint.into_iter().chain(args.iter().cloned()).collect()
    } else {
        entrypoint.into_iter().chain(image_cmd).collect()
    };
    if args.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    Ok(args)
}

/// The environment: image Env, then the Marathon variables, then `env` parameters (a
/// later value wins; the first position is kept). The Marathon `PATH` and `HOME` describe
/// the agent's sandbox, so they only override the image's when the app set them itself;
/// `MESOS_SANDBOX` points at the sandbox's mount inside the container.
pub fn process_env(
    app: &AppDefinition,
    image: &ImageConfiguration,
    marathon: &[(String, String)],
    params: &DockerParameters,
    hostname: &str,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
        match env.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value.to_string(),
            None => env.push((name.to_string(), value.to_string())),
        }
    }
    set(&mut env, "HOSTNAME", hostname);
    for entry in image.config().as_ref().and_then(|c| c.env().clone()).unwrap_or_default() {
        let (name, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        set(&mut env, name, value);
    }
    for (name, value) in marathon {
        if (name == "PATH" || name == "HOME") && !app.env.contains_key(name) {
            continue;
        }
        if name == "MESOS_SANDBOX" {
            set(&mut env, name, SANDBOX_IN_CONTAINER);
            continue;
        }
        set(&mut env, name, value);
    }
    for (name, value) in &params.env {
        set(&mut env, name, value);
    }
    if !env.iter().any(|(n, _)| n == "PATH") {
        set(&mut env, "PATH", DEFAULT_PATH);
    }
    if !env.iter().any(|(n, _)| n == "HOME") {
        set(&mut env, "HOME", "/");
    }
    env.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
}

/// The spec's `process`: argv, environment, working directory, user, capabilities, the
/// open-files limit and `noNewPrivileges` (off for `privileged`).
pub(super) fn process(
    input: &SpecInput<'_>,
    params: &DockerParameters,
    hostname: &str,
    privileged: bool,
) -> Result<Value, ContainerError> {
    let app = input.app;
    let args = process_args(app, input.image)?;
    let env = process_env(app, input.image, input.env, params, hostname);
    let cwd = params
        .workdir
        .clone()
        .or_else(|| input.image.config().as_ref().and_then(|c| c.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(ContainerError::Image(format!("the image's WorkingDir {cwd} is not an absolute path")));
    }

    let mut process = json!({
        "terminal": false,
        "user": {"uid": input.user.uid, "gid": input.user.gid},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": security::capabilities(privileged),
        // As Docker 25+: a low soft limit for old select() programs, the inherited hard
        // one for servers that raise it.
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": input.nofile_hard.min(1024), "hard": input.nofile_hard}],
        "noNewPrivileges": !privileged,
    });
    if !input.user.additional_gids.is_empty() {
        process["user"]["additionalGids"] = json!(input.user.additional_gids);
    }
    Ok(process)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::spec::fixtures::{busybox_image, image, spec_json, strings};
    use crate::container::spec::NetNamespace;

    #[test]
    fn cmd_runs_through_the_shell_and_replaces_entrypoint_and_cmd() {
        let spec = spec_json(json!({"id": "/web", "cmd": "echo hi; sleep 1"}), &busybox_image(), NetNamespace::Host)
            .expect("spec");
        assert_eq!(strings(&spec["process"]["args"]), ["/bin/sh", "-c", "echo hi; sleep 1"]);
    }

    #[test]
    fn args_replace_cmd_and_keep_entrypoint() {
        let spec =
            spec_json(json!({"id": "/web", "args": ["x", "y"]}), &busybox_image(), NetNamespace::Host).expect("spec");
        assert_eq!(strings(&spec["process"]["args"]), ["/bin/entry", "x", "y"]);
        let no_entry = image(json!({"Cmd": ["sh"]}));
        let spec =
            spec_json(json!({"id": "/web", "args": ["/bin/echo", "y"]}), &no_entry, NetNamespace::Host).expect("spec");
        assert_eq!(strings(&spec["process"]["args"]), ["/bin/echo", "y"]);
    }

    #[test]
    fn no_command_at_all_is_an_error() {
        let err = spec_json(json!({"id": "/web"}), &image(json!({})), NetNamespace::Host).expect_err("no command");
        assert!(matches!(err, ContainerError::NoCommand), "{err}");
    }

    #[test]
    fn app_env_path_and_parameters_win() {
        let spec = spec_json(
            json!({"id": "/web", "env": {"PATH": "/app/bin"},
                   "container": {"type": "DOCKER", "docker": {"image": "x", "parameters": [
                       {"key": "env", "value": "GREETING=param"}, {"key": "workdir", "value": "/w"},
                       {"key": "hostname", "value": "my-host"}, {"key": "label", "value": "team=a"}]}}}),
            &busybox_image(),
            NetNamespace::Host,
        )
        .expect("spec");
        let env = strings(&spec["process"]["env"]);
        assert!(env.contains(&"GREETING=param".to_string()), "{env:?}");
        // The app set PATH itself, so the Marathon PATH (from app.env) wins over the image's.
        assert!(env.contains(&"PATH=/host/bin".to_string()), "{env:?}");
        assert!(env.contains(&"HOSTNAME=my-host".to_string()), "{env:?}");
        assert_eq!(spec["process"]["cwd"], "/w");
        assert_eq!(spec["hostname"], "my-host");
        assert_eq!(spec["annotations"]["team"], "a");
    }

    #[test]
    fn unknown_or_bad_parameters_are_refused_by_name() {
        for (key, value, expected) in [
            ("cap-add", "SYS_ADMIN", "cap-add"),
            ("env", "NOEQUALS", "NAME=VALUE"),
            ("workdir", "relative", "absolute"),
        ] {
            let err = spec_json(
                json!({"id": "/web", "container": {"type": "DOCKER", "docker": {"image": "x",
                       "parameters": [{"key": key, "value": value}]}}}),
                &busybox_image(),
                NetNamespace::Host,
            )
            .expect_err("refused");
            let message = err.to_string();
            assert!(message.contains(key) && message.contains(expected), "{message}");
        }
    }

    #[test]
    fn hostnames_are_valid() {
        let params = DockerParameters::default();
        assert_eq!(hostname("my_app.1234-abcd", &params), "my-app-1234-abcd");
        assert_eq!(hostname(&"a".repeat(100), &params).len(), 63);
        assert_eq!(hostname("..", &params), "task");
    }
}
