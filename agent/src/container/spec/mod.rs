//! The OCI runtime spec of a Docker task, built the way `docker run` would: the image's
//! config (Entrypoint, Cmd, Env, WorkingDir, User) overridden by the Marathon app (`cmd`,
//! `args`, `env`, `container.docker.parameters`, `container.volumes`), Docker's default
//! mounts, capabilities, masked paths and seccomp deny-list unless `privileged`.
//!
//! [`build_spec`] is pure (everything it needs is in [`SpecInput`]), so the tests pin the
//! exact result; looking the user up in the image's `/etc/passwd` is [`resolve_user`].
//!
//! One file per part of the spec: `resolv.rs` (the container's resolv.conf), `process.rs` (argv, env, user, hostname, Docker
//! parameters), `mounts.rs` (default mounts, `/etc` files, volumes), `security.rs`
//! (capabilities, masked paths, seccomp, devices), `resources.rs` (cgroup limits),
//! `user.rs` (the image's users and groups); [`build_spec`] puts them together.
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;
use plinth_protocol::AppDefinition;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ContainerError;
use crate::userns::IdRemap;

mod mounts;
mod process;
mod resolv;
mod resources;
mod security;
mod user;

pub use mounts::volume_mounts;
pub use process::{
    docker_parameters, effective_user, hostname, process_args, process_env, DockerParameters, DEFAULT_PATH,
    SUPPORTED_PARAMETERS,
};
pub use resolv::resolv_conf;
pub use security::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES, DENIED_SYSCALLS, MASKED_PATHS, READONLY_PATHS};
pub use user::{resolve_user, ResolvedUser};

/// Where the task's sandbox appears inside the container (as Mesos mounts it).
pub const SANDBOX_IN_CONTAINER: &str = "/mnt/mesos/sandbox";

/// The container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetNamespace {
    /// The agent's (HOST networking): no network namespace of its own.
    Host,
    /// A prepared namespace (BRIDGE, NONE) to join.
    Path(PathBuf),
}

/// The generated `/etc` files bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv_conf: PathBuf,
}

/// Everything [`build_spec`] reads.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub task_id: &'a str,
    pub app: &'a AppDefinition,
    pub image: &'a ImageConfiguration,
    /// The Marathon environment (PORT0.., HOST, MESOS_*), in order.
    pub env: &'a [(String, String)],
    pub rootfs: &'a Path,
    pub sandbox: &'a Path,
    pub net: NetNamespace,
    /// e.g. `/plinth/<task_id>`, the directory the agent's cgroup already has.
    pub cgroups_path: String,
    pub etc: Option<EtcFiles>,
    /// The resolved [`effective_user`].
    pub user: ResolvedUser,
    /// The hard RLIMIT_NOFILE the container gets: the executor's own, as Docker passes
    /// dockerd's on (raising it needs CAP_SYS_RESOURCE, which a runtime may lack).
    pub nofile_hard: u64,
    /// `--userns-remap`: a user namespace mapping container ids 0.. to these host ids.
    pub userns: Option<IdRemap>,
}

/// Builds the runtime spec. Pure: no file is read.
pub fn build_spec(input: &SpecInput<'_>) -> Result<Spec, ContainerError> {
    let app = input.app;
    let params = docker_parameters(app)?;
    let privileged = app.container.as_ref().and_then(|c| c.docker.as_ref()).is_some_and(|d| d.privileged);
    let hostname = hostname(input.task_id, &params);
    let process = process::process(input, &params, &hostname, privileged)?;
    let mounts = mounts::mounts(input, privileged)?;

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "cgroup"}),
    ];
    if let NetNamespace::Path(path) = &input.net {
        namespaces.push(json!({"type": "network", "path": path}));
    }
    if input.userns.is_some() {
        namespaces.push(json!({"type": "user"}));
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": input.cgroups_path,
        "resources": resources::resources(app, privileged),
    });
    if let Some(remap) = input.userns {
        let mapping = json!([{"containerID": 0, "hostID": remap.start, "size": remap.count}]);
        linux["uidMappings"] = mapping.clone();
        linux["gidMappings"] = mapping;
    }
    if !privileged {
        security::confine(&mut linux);
    }

    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    annotations.insert("org.plinth.task-id".into(), input.task_id.to_string());
    annotations.extend(params.labels.clone());

    let spec = json!({
        "ociVersion": "1.0.2",
        "root": {"path": input.rootfs, "readonly": false},
        "process": process,
        "hostname": hostname,
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    });
    serde_json::from_value(spec).map_err(|e| ContainerError::Spec(e.to_string()))
}

/// What the tests of every part build specs from.
#[cfg(test)]
mod fixtures {
    use super::*;
    use crate::testing::task_spec;
    use serde_json::Value;

    pub(super) fn image(config: Value) -> ImageConfiguration {
        serde_json::from_value(json!({"architecture": "amd64", "os": "linux", "config": config,
                                      "rootfs": {"type": "layers", "diff_ids": []}}))
        .expect("image config")
    }

    pub(super) fn busybox_image() -> ImageConfiguration {
        image(json!({"Entrypoint": ["/bin/entry"], "Cmd": ["serve", "--port", "80"],
                     "Env": ["PATH=/image/bin:/bin", "IMAGE_ONLY=1", "GREETING=image"], "WorkingDir": "/app"}))
    }

    pub(super) fn spec_json(
        app: Value,
        image: &ImageConfiguration,
        net: NetNamespace,
    ) -> Result<Value, ContainerError> {
        spec_json_remapped(app, image, net, None)
    }

    pub(super) fn spec_json_remapped(
        app: Value,
        image: &ImageConfiguration,
        net: NetNamespace,
        userns: Option<IdRemap>,
    ) -> Result<Value, ContainerError> {
        let task = task_spec("web.abc", app, vec![31000]);
        let env = vec![
            ("PATH".to_string(), "/host/bin".to_string()),
            ("HOME".to_string(), "/sandbox".to_string()),
            ("PORT0".to_string(), "31000".to_string()),
            ("GREETING".to_string(), "marathon".to_string()),
            ("MESOS_SANDBOX".to_string(), "/sandbox".to_string()),
        ];
        let input = SpecInput {
            task_id: "web.abc",
            app: &task.app,
            image,
            env: &env,
            rootfs: Path::new("/rootfs"),
            sandbox: Path::new("/sandbox"),
            net,
            cgroups_path: "/plinth/web.abc".into(),
            etc: Some(EtcFiles {
                hosts: "/sandbox/etc/hosts".into(),
                hostname: "/sandbox/etc/hostname".into(),
                resolv_conf: "/sandbox/etc/resolv.conf".into(),
            }),
            user: ResolvedUser::default(),
            nofile_hard: 4096,
            userns,
        };
        build_spec(&input).map(|s| serde_json::to_value(s).expect("serialise"))
    }

    pub(super) fn strings(value: &Value) -> Vec<String> {
        value.as_array().expect("array").iter().map(|v| v.as_str().expect("string").to_string()).collect()
    }
}
#[cfg(test)]
mod tests {
    use super::fixtures::{busybox_image, spec_json, spec_json_remapped, strings};
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn a_userns_remap_adds_a_user_namespace_with_the_range_and_binds_sys() {
        let remap = IdRemap { start: 100_000, count: 65_536 };
        let spec =
            spec_json_remapped(json!({"id": "/web"}), &busybox_image(), NetNamespace::Host, Some(remap)).expect("spec");
        let namespaces: Vec<&str> =
            spec["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert_eq!(namespaces, ["pid", "mount", "ipc", "uts", "cgroup", "user"]);
        let mapping = json!([{"containerID": 0, "hostID": 100_000, "size": 65_536}]);
        assert_eq!(spec["linux"]["uidMappings"], mapping);
        assert_eq!(spec["linux"]["gidMappings"], mapping);
        let sys = spec["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/sys").unwrap();
        assert_eq!((sys["type"].as_str(), sys["source"].as_str()), (Some("bind"), Some("/sys")));
        assert!(strings(&sys["options"]).contains(&"ro".to_string()), "{sys}");

        let plain = spec_json(json!({"id": "/web"}), &busybox_image(), NetNamespace::Host).expect("spec");
        assert!(plain["linux"].get("uidMappings").is_none(), "no remap, no user namespace");
        let sys = plain["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/sys").unwrap();
        assert_eq!(sys["type"], "sysfs");
    }

    #[test]
    fn a_remapped_sandbox_is_an_rbind_with_its_overlay_covered() {
        let remap = IdRemap { start: 100_000, count: 65_536 };
        let spec =
            spec_json_remapped(json!({"id": "/web"}), &busybox_image(), NetNamespace::Host, Some(remap)).expect("spec");
        let mounts = spec["mounts"].as_array().unwrap();
        let sandbox = mounts.iter().find(|m| m["destination"] == SANDBOX_IN_CONTAINER).unwrap();
        assert!(strings(&sandbox["options"]).contains(&"rbind".to_string()), "{sandbox}");
        let cover = mounts.iter().find(|m| m["destination"] == "/mnt/mesos/sandbox/container-fs").unwrap();
        assert_eq!(cover["type"], "tmpfs");
        assert!(strings(&cover["options"]).contains(&"ro".to_string()), "{cover}");
    }

    #[test]
    fn image_defaults_give_entrypoint_cmd_env_and_workdir() {
        let spec = spec_json(json!({"id": "/web"}), &busybox_image(), NetNamespace::Host).expect("spec");
        assert_eq!(strings(&spec["process"]["args"]), ["/bin/entry", "serve", "--port", "80"]);
        assert_eq!(spec["process"]["cwd"], "/app");
        assert_eq!(
            strings(&spec["process"]["env"]),
            [
                "HOSTNAME=web-abc",
                "PATH=/image/bin:/bin",
                "IMAGE_ONLY=1",
                "GREETING=marathon",
                "PORT0=31000",
                "MESOS_SANDBOX=/mnt/mesos/sandbox",
                "HOME=/",
            ]
        );
        assert_eq!(spec["hostname"], "web-abc");
        assert_eq!(spec["root"]["path"], "/rootfs");
        assert_eq!(spec["linux"]["cgroupsPath"], "/plinth/web.abc");
        assert_eq!(spec["process"]["user"]["uid"], 0);
    }

    #[test]
    fn defaults_are_docker_safe() {
        let spec = spec_json(json!({"id": "/web", "cpus": 0.5, "mem": 64}), &busybox_image(), NetNamespace::Host)
            .expect("spec");
        let caps = &spec["process"]["capabilities"];
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(strings(&caps[set]).len(), 14, "{set}");
        }
        assert!(caps.get("ambient").is_none_or(Value::is_null));
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert_eq!(strings(&spec["linux"]["maskedPaths"]), MASKED_PATHS);
        assert_eq!(strings(&spec["linux"]["readonlyPaths"]), READONLY_PATHS);
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        let denied = strings(&spec["linux"]["seccomp"]["syscalls"][0]["names"]);
        assert!(denied.contains(&"kexec_load".to_string()) && denied.contains(&"bpf".to_string()));
        assert_eq!(spec["linux"]["resources"]["cpu"]["shares"], 512);
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(spec["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 * 1024 * 1024);
        let namespaces: Vec<&str> =
            spec["linux"]["namespaces"].as_array().expect("ns").iter().filter_map(|n| n["type"].as_str()).collect();
        assert_eq!(namespaces, ["pid", "mount", "ipc", "uts", "cgroup"]);
        let mounts: Vec<&str> =
            spec["mounts"].as_array().expect("mounts").iter().filter_map(|m| m["destination"].as_str()).collect();
        assert_eq!(
            mounts,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm",
                SANDBOX_IN_CONTAINER,
                "/etc/hosts",
                "/etc/hostname",
                "/etc/resolv.conf"
            ]
        );
        let sys = &spec["mounts"][3];
        assert!(strings(&sys["options"]).contains(&"ro".to_string()));
    }

    #[test]
    fn privileged_opts_out() {
        let spec = spec_json(
            json!({"id": "/web", "container": {"type": "DOCKER", "docker": {"image": "x", "privileged": true}}}),
            &busybox_image(),
            NetNamespace::Path("/run/plinth/netns/web.abc".into()),
        )
        .expect("spec");
        assert_eq!(strings(&spec["process"]["capabilities"]["bounding"]).len(), ALL_CAPABILITIES.len());
        assert_eq!(spec["process"]["noNewPrivileges"], false);
        assert!(spec["linux"].get("seccomp").is_none_or(Value::is_null));
        assert!(spec["linux"].get("maskedPaths").is_none_or(Value::is_null));
        assert!(spec["linux"].get("readonlyPaths").is_none_or(Value::is_null));
        assert!(!strings(&spec["mounts"][3]["options"]).contains(&"ro".to_string()));
        let network = spec["linux"]["namespaces"].as_array().expect("ns").last().expect("net").clone();
        assert_eq!(network, json!({"type": "network", "path": "/run/plinth/netns/web.abc"}));
    }
}
