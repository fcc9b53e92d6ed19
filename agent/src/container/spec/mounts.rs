//! The container's filesystems: Docker's default mounts (/proc, /dev, /sys, cgroup,
//! mqueue, shm), the sandbox, the generated `/etc` files and the app's volumes.
use plinth_protocol::AppDefinition;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

use super::{SpecInput, SANDBOX_IN_CONTAINER};
use crate::container::ContainerError;

/// Every mount of the container, in order: the default ones (`/sys` and the cgroup
/// read-only unless `privileged`), the sandbox, the `/etc` files, the volumes.
pub(super) fn mounts(input: &SpecInput<'_>, privileged: bool) -> Result<Vec<Value>, ContainerError> {
    let sys_options: Vec<&str> =
        if privileged { vec!["nosuid", "noexec", "nodev"] } else { vec!["nosuid", "noexec", "nodev", "ro"] };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        sys_mount(input, sys_options),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", if privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]}),
    ];
    mounts.extend(sandbox_mounts(input));
    if let Some(etc) = &input.etc {
        for (destination, source) in
            [("/etc/hosts", &etc.hosts), ("/etc/hostname", &etc.hostname), ("/etc/resolv.conf", &etc.resolv_conf)]
        {
            mounts.push(json!({"destination": destination, "type": "bind", "source": source,
                               "options": ["rbind", "rprivate", "rw"]}));
        }
    }
    mounts.extend(volume_mounts(input.app, input.sandbox)?);
    Ok(mounts)
}

/// The sandbox. Not `rbind`: the task's overlay rootfs is mounted inside it. In a user
/// namespace the kernel refuses a plain bind of a directory holding a mount (it would
/// reveal what the mount covers), so there it is an `rbind` with an empty read-only
/// tmpfs over the overlay's directory.
fn sandbox_mounts(input: &SpecInput<'_>) -> Vec<Value> {
    if input.userns.is_none() {
        return vec![json!({"destination": SANDBOX_IN_CONTAINER, "type": "bind", "source": input.sandbox,
                           "options": ["bind", "rprivate", "rw"]})];
    }
    let overlay = Path::new(SANDBOX_IN_CONTAINER).join(crate::container::IMAGE_TASK_DIR);
    vec![
        json!({"destination": SANDBOX_IN_CONTAINER, "type": "bind", "source": input.sandbox,
               "options": ["rbind", "rprivate", "rw"]}),
        json!({"destination": overlay, "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "noexec", "nodev", "ro", "size=4k"]}),
    ]
}

/// `/sys`: a sysfs of its own, except in a user namespace (`--userns-remap`), where the
/// kernel refuses one (the network namespace belongs to the host's user namespace), so
/// it is the host's `/sys`, bound read-only, as runc does then.
fn sys_mount(input: &SpecInput<'_>, mut options: Vec<&str>) -> Value {
    if input.userns.is_none() {
        return json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": options});
    }
    options.retain(|o| *o != "ro");
    options.extend(["rbind", "rprivate", "ro"]);
    json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": options})
}

/// `container.volumes` as bind mounts. A relative `hostPath` is inside the sandbox, as
/// in Mesos.
pub fn volume_mounts(app: &AppDefinition, sandbox: &Path) -> Result<Vec<Value>, ContainerError> {
    let mut mounts = Vec::new();
    for volume in app.container.as_ref().map(|c| c.volumes.as_slice()).unwrap_or_default() {
        let bad = |reason: &str| ContainerError::Volume {
            container_path: volume.container_path.clone(),
            reason: reason.into(),
        };
        if !volume.container_path.starts_with('/') {
            return Err(bad("containerPath must be an absolute path"));
        }
        if volume.container_path.split('/').any(|part| part == "..") {
            return Err(bad("containerPath must not contain `..`"));
        }
        let host = volume.host_path.as_deref().filter(|h| !h.is_empty()).ok_or_else(|| {
            bad("only host volumes (hostPath) are supported; persistent and external volumes are not")
        })?;
        let host_path = if host.starts_with('/') { PathBuf::from(host) } else { sandbox.join(host) };
        let mode = match volume.mode.to_ascii_uppercase().as_str() {
            "RO" => "ro",
            "RW" => "rw",
            other => return Err(bad(&format!("mode {other} is neither RO nor RW"))),
        };
        mounts.push(json!({
            "destination": volume.container_path,
            "type": "bind",
            "source": host_path,
            "options": ["rbind", "rprivate", mode],
        }));
    }
    Ok(mounts)
}
#[cfg(test)]
mod tests {
    use crate::container::spec::fixtures::{busybox_image, spec_json, strings};
    use crate::container::spec::NetNamespace;
    use serde_json::json;

    #[test]
    fn volumes_become_bind_mounts() {
        let spec = spec_json(
            json!({"id": "/web", "container": {"type": "DOCKER", "docker": {"image": "x"}, "volumes": [
                {"containerPath": "/data", "hostPath": "/srv/data", "mode": "RO"},
                {"containerPath": "/scratch", "hostPath": "scratch", "mode": "RW"}]}}),
            &busybox_image(),
            NetNamespace::Host,
        )
        .expect("spec");
        let mounts = spec["mounts"].as_array().expect("mounts");
        let data = mounts.iter().find(|m| m["destination"] == "/data").expect("/data");
        assert_eq!(data["source"], "/srv/data");
        assert_eq!(strings(&data["options"]), ["rbind", "rprivate", "ro"]);
        let scratch = mounts.iter().find(|m| m["destination"] == "/scratch").expect("/scratch");
        assert_eq!(scratch["source"], "/sandbox/scratch");
        assert_eq!(strings(&scratch["options"]), ["rbind", "rprivate", "rw"]);

        for (volume, expected) in [
            (json!({"containerPath": "data", "hostPath": "/x", "mode": "RW"}), "absolute"),
            (json!({"containerPath": "/data", "mode": "RW"}), "hostPath"),
            (json!({"containerPath": "/data", "hostPath": "/x", "mode": "XX"}), "neither"),
        ] {
            let err = spec_json(
                json!({"id": "/web", "container": {"type": "DOCKER", "docker": {"image": "x"}, "volumes": [volume]}}),
                &busybox_image(),
                NetNamespace::Host,
            )
            .expect_err("refused");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
