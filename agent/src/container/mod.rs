//! Docker tasks as real containers, run by youki's `libcontainer` inside the per-task
//! executor.
//!
//! [`start`] does everything between "the artifacts are fetched" and "the container's
//! init runs": image → network (+ host ports) → `/etc` files → runtime spec → create and
//! start. It returns a [`Running`] container whose [`Running::teardown`] (also run on
//! drop, and on any start failure) deletes the container, closes the host ports,
//! releases the image and removes the network pieces. [`cleanup_leftovers`] does the
//! same for a task whose executor died.
//!
//! - [`spec`]: the OCI runtime spec from image config + app (pure).
//! - [`kernel_modules`]: waiting for a booting node's background module load.
//! - [`network`]: bridge, IPAM, named network namespaces, veth pairs.
//! - [`proxy`]: host port → container port forwarding (userland).
//! - [`run`]: libcontainer create/start/delete.
pub mod kernel_modules;
pub mod network;
pub mod proxy;
pub mod run;
pub mod spec;

use oci_spec::image::ImageConfiguration;
use plinth_protocol::error_chain;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::executor_contract::{
    ContainerNetwork, ContainerRecord, ContainerTask, ExecutorSpec, MappedPort, PhaseMark, PortRecord, StartPhase,
    CONTAINER_FILE, SPEC_FILE,
};
use crate::userns::IdRemap;
use crate::{fsutil, image};

/// The OCI bundle (`config.json`) in the sandbox.
pub const BUNDLE_DIR: &str = "bundle";
/// Generated `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`.
pub const ETC_DIR: &str = "etc";
/// The image's overlay for this task (see [`image_task_dir`]).
pub const IMAGE_TASK_DIR: &str = "container-fs";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("docker parameter `{key}`: {reason}")]
    Parameter { key: String, reason: String },
    #[error("volume {container_path}: {reason}")]
    Volume { container_path: String, reason: String },
    #[error("the image has no Entrypoint or Cmd, and the app sets neither cmd nor args")]
    NoCommand,
    #[error("image: {0}")]
    Image(String),
    #[error("user {user}: {reason}")]
    User { user: String, reason: String },
    #[error("invalid runtime spec: {0}")]
    Spec(String),
    #[error("{step}: {message}")]
    Runtime { step: &'static str, message: String },
    #[error("{what} {}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("container subnet {subnet}: {reason}")]
    Subnet { subnet: String, reason: String },
    #[error("container addresses: {0}")]
    Ipam(String),
    #[error("network: {step}: {message}")]
    Network { step: String, message: String },
    #[error("host port {port}/{protocol}: {reason}")]
    Port { port: u16, protocol: String, reason: String },
    #[error("the executor spec has no task (app definition)")]
    NoApp,
}

/// The image a container runs.
struct PreparedImage {
    rootfs: PathBuf,
    config: ImageConfiguration,
    digest: Option<String>,
}

/// The image store's per-task directory (overlay upper, work and merged rootfs) in the
/// sandbox. The sandbox is bind-mounted into the container non-recursively, so the
/// container never sees its own overlay mounted there.
pub fn image_task_dir(sandbox: &Path) -> PathBuf {
    sandbox.join(IMAGE_TASK_DIR)
}

/// Where the image comes from: the local rootfs, else the image store (pulled from the
/// master's registry, pinned for the task, mounted as an overlay). `phases` gets when
/// the image was ready and when its rootfs was.
fn prepare_image(
    spec: &ExecutorSpec,
    task: &ContainerTask,
    phases: &mut Vec<PhaseMark>,
) -> Result<PreparedImage, ContainerError> {
    if let Some(local) = &task.local_image {
        let config = ImageConfiguration::from_file(&local.config)
            .map_err(|e| ContainerError::Image(format!("cannot read {}: {e}", local.config.display())))?;
        // A prepared rootfs is ready as it is.
        phases.extend([PhaseMark::now(StartPhase::Pulled), PhaseMark::now(StartPhase::Rootfs)]);
        return Ok(PreparedImage { rootfs: local.rootfs.clone(), config, digest: None });
    }
    let image_err = |e: &dyn std::error::Error| ContainerError::Image(format!("{}: {}", task.image, error_chain(e)));
    let reference = plinth_oci::ImageRef::parse(&task.image).map_err(|e| image_err(&e))?;
    let store = open_store(task).map_err(|e| image_err(&e))?;
    let source = image::RegistrySource::master(&task.registry, &reference);
    let pulled = store.pull(&source, &reference, task.force_pull, &mut |_| {}).map_err(|e| image_err(&e))?;
    phases.push(PhaseMark::now(StartPhase::Pulled));
    let rootfs =
        store.mount_rootfs(&pulled, &image_task_dir(&spec.sandbox), &spec.task_id).map_err(|e| image_err(&e))?;
    phases.push(PhaseMark::now(StartPhase::Rootfs));
    Ok(PreparedImage { rootfs, config: pulled.config, digest: Some(pulled.manifest_digest.to_string()) })
}

fn open_store(task: &ContainerTask) -> Result<image::ImageStore, image::ImageError> {
    let options = image::ImageStoreOptions {
        max_layer_bytes: task.max_layer_bytes,
        id_remap: task.userns_remap,
        ..Default::default()
    };
    image::ImageStore::open(&task.images_dir, options)
}

/// Undoes [`prepare_image`]: unmounts the rootfs and unpins the image. Missing mounts
/// and pins are fine.
fn release_image(sandbox: &Path, task_id: &str, task: &ContainerTask) {
    if let Err(err) = image::unmount_rootfs(&image_task_dir(sandbox)) {
        tracing::warn!(task_id, err = %error_chain(&err), "cannot unmount the container's rootfs");
    }
    let _ = std::fs::remove_dir(image_task_dir(sandbox));
    match open_store(task).and_then(|store| store.unpin(task_id)) {
        Ok(()) => {}
        Err(err) => tracing::warn!(task_id, err = %error_chain(&err), "cannot unpin the container's image"),
    }
}

/// A started container. Drop tears it down.
pub struct Running {
    pub pid: i32,
    pub record: ContainerRecord,
    /// When each start phase ended: pulled, rootfs, created, started.
    pub phases: Vec<PhaseMark>,
    session: Session,
}

impl Running {
    /// Deletes the container (killing anything left in it), closes its host ports,
    /// releases its image and network. Idempotent.
    pub fn teardown(&mut self) {
        self.session.teardown();
    }

    /// The OOM check must read the cgroup before teardown deletes it.
    pub fn cgroup_path(&self) -> &str {
        &self.record.cgroup
    }
}

/// What has been set up so far, undone in reverse by [`Session::teardown`].
struct Session {
    id: String,
    task_id: String,
    sandbox: PathBuf,
    state_root: PathBuf,
    ipam_dir: Option<PathBuf>,
    network: bool,
    /// Set once the image store mounted (and pinned) the image.
    image: Option<ContainerTask>,
    proxies: Option<proxy::Proxies>,
    reserved: Option<proxy::Reserved>,
    done: bool,
}

impl Session {
    fn teardown(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Err(err) = run::delete(&self.id, &self.state_root) {
            tracing::warn!(id = %self.id, err = %error_chain(&err), "cannot delete the container");
        }
        if let Some(mut proxies) = self.proxies.take() {
            proxies.stop();
        }
        self.reserved = None;
        if let Some(task) = &self.image {
            release_image(&self.sandbox, &self.task_id, task);
        }
        if self.network {
            network::teardown(&self.id, self.ipam_dir.as_deref());
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The cgroup path libcontainer uses: the one the agent created for the task.
pub fn cgroups_path(task_id: &str) -> String {
    format!("/{}/{task_id}", crate::cgroup::PARENT)
}

/// Starts the task's container. `stdout`/`stderr` are the sandbox's log files. Any
/// failure undoes what was done and says which step failed.
pub fn start(spec: &ExecutorSpec, task: &ContainerTask, stdout: File, stderr: File) -> Result<Running, ContainerError> {
    let state_root = PathBuf::from(run::STATE_ROOT);
    let id = run::container_id(&spec.task_id);
    let app = &spec.task.as_ref().ok_or(ContainerError::NoApp)?.app;
    // Refuse bad parameters before anything is set up.
    let params = spec::docker_parameters(app)?;
    // A container of a crashed executor with this id would make create fail.
    run::delete(&id, &state_root)?;
    // On a node still loading overlay/veth/bridge at boot, wait for them.
    kernel_modules::wait_for_node();

    let mut session = Session {
        id: id.clone(),
        task_id: spec.task_id.clone(),
        sandbox: spec.sandbox.clone(),
        state_root: state_root.clone(),
        ipam_dir: None,
        network: false,
        image: None,
        proxies: None,
        reserved: None,
        done: false,
    };
    // Marked before the pull: a failed mount may have pinned the image already.
    if task.local_image.is_none() {
        session.image = Some(task.clone());
    }
    let mut phases = Vec::new();
    let image = prepare_image(spec, task, &mut phases)?;

    // Host ports first: a clash fails the start before any network piece exists.
    let (net, attached, network_name) = match &task.network {
        ContainerNetwork::Host => (spec::NetNamespace::Host, None, "host"),
        ContainerNetwork::Bridge { bridge, subnet, ipam_dir } => {
            session.reserved = Some(proxy::reserve(&task.port_mappings)?);
            session.ipam_dir = Some(ipam_dir.clone());
            session.network = true;
            let attached = network::setup_bridge(&id, bridge, subnet, ipam_dir)?;
            (spec::NetNamespace::Path(attached.netns.clone()), Some(attached), "bridge")
        }
        ContainerNetwork::None => {
            session.network = true;
            let attached = network::setup_none(&id)?;
            (spec::NetNamespace::Path(attached.netns.clone()), Some(attached), "none")
        }
    };
    let ip = attached.as_ref().and_then(|a| a.ip);

    let hostname = spec::hostname(&spec.task_id, &params);
    // The node's DNS as the container reaches it: the bridge's address from a bridge (an
    // answer from any other address of the node would come from the wrong source), the
    // node's own in its namespace; none with no network.
    let dns_server = match (&task.network, attached.as_ref()) {
        (ContainerNetwork::Host, _) => task.host.parse::<std::net::IpAddr>().ok(),
        (ContainerNetwork::Bridge { .. }, Some(attached)) => attached.gateway.map(std::net::IpAddr::V4),
        _ => None,
    };
    let dns = task.dns_search.as_deref().and_then(|search| Some((dns_server?, search)));
    let etc = write_etc_files(&spec.sandbox, &hostname, ip, &task.host, dns)?;
    let user = spec::resolve_user(&image.rootfs, spec::effective_user(&params, &image.config).as_deref())?;
    if let Some(remap) = task.userns_remap {
        remap_sandbox(&spec.sandbox, remap, &user)?;
    }
    let cgroup = cgroups_path(&spec.task_id);
    // In a user namespace libcontainer would join the network namespace from inside it,
    // which the kernel refuses (the namespace is the host user namespace's): the
    // container inherits it instead, the executor standing in it while it creates.
    let inherited_netns = match (&net, task.userns_remap) {
        (spec::NetNamespace::Path(path), Some(_)) => Some(path.clone()),
        _ => None,
    };
    let net = if inherited_netns.is_some() { spec::NetNamespace::Host } else { net };
    let runtime_spec = spec::build_spec(&spec::SpecInput {
        task_id: &spec.task_id,
        app,
        image: &image.config,
        env: &spec.env,
        rootfs: &image.rootfs,
        sandbox: &spec.sandbox,
        net,
        cgroups_path: cgroup.clone(),
        etc: Some(etc),
        user,
        nofile_hard: nofile_hard_limit(),
        userns: task.userns_remap,
    })?;
    let bundle = spec.sandbox.join(BUNDLE_DIR);
    run::write_bundle(&bundle, &runtime_spec)?;

    // The container's init is a grandchild (libcontainer's intermediate process exits);
    // as a subreaper the executor inherits it and can waitpid it.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(ContainerError::Runtime {
            step: "becoming the container's subreaper",
            message: std::io::Error::last_os_error().to_string(),
        });
    }
    let pid = match &inherited_netns {
        Some(netns) => network::inside_netns(netns, || {
            run::create_and_start(&id, &state_root, &bundle, stdout, stderr, &mut phases)
        })?,
        None => run::create_and_start(&id, &state_root, &bundle, stdout, stderr, &mut phases)?,
    };

    if let (Some(reserved), Some(ip)) = (session.reserved.take(), ip) {
        session.proxies = Some(reserved.start(ip));
    }
    let ports = match &task.network {
        ContainerNetwork::Bridge { .. } => task.port_mappings.iter().map(port_record).collect(),
        _ => Vec::new(),
    };
    let record = ContainerRecord {
        id,
        pid,
        ip,
        network: network_name.to_string(),
        image: task.image.clone(),
        image_digest: image.digest.clone(),
        rootfs: image.rootfs.clone(),
        cgroup,
        netns: attached.map(|a| a.netns),
        ports,
    };
    fsutil::write_json_atomic(&spec.sandbox.join(CONTAINER_FILE), &record).map_err(|e| ContainerError::Io {
        what: "writing",
        path: spec.sandbox.join(CONTAINER_FILE),
        source: std::io::Error::other(error_chain(&e).to_string()),
    })?;
    Ok(Running { pid, record, phases, session })
}

/// With `--userns-remap`: refuses a user the namespace cannot hold, and lets the
/// container's root (host id START) create files in the sandbox, which becomes
/// `root:START` with the sticky bit (`01770`), as a command task's: what it writes is
/// START's, while the executor's records and logs stay root's, out of its reach.
fn remap_sandbox(sandbox: &Path, remap: IdRemap, user: &spec::ResolvedUser) -> Result<(), ContainerError> {
    let refused = |e: crate::userns::RemapError| ContainerError::User {
        user: format!("{}:{}", user.uid, user.gid),
        reason: format!("with --userns-remap {remap}: {e}"),
    };
    remap.host_id("uid", user.uid).map_err(refused)?;
    for gid in std::iter::once(&user.gid).chain(&user.additional_gids) {
        remap.host_id("gid", *gid).map_err(refused)?;
    }
    let io = |source| ContainerError::Io { what: "handing to the remapped root", path: sandbox.to_path_buf(), source };
    std::os::unix::fs::chown(sandbox, Some(0), Some(remap.start)).map_err(io)?;
    std::fs::set_permissions(sandbox, std::os::unix::fs::PermissionsExt::from_mode(0o1770)).map_err(io)
}

/// The executor's hard RLIMIT_NOFILE (what the container inherits).
fn nofile_hard_limit() -> u64 {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) if hard != libc::RLIM_INFINITY => hard,
        _ => 1 << 20,
    }
}

fn port_record(mapping: &MappedPort) -> PortRecord {
    PortRecord {
        container_port: mapping.container_port,
        host_port: mapping.host_port,
        protocol: mapping.protocol.clone(),
    }
}

/// Writes the container's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` into the
/// sandbox (bind-mounted by the spec).
fn write_etc_files(
    sandbox: &Path,
    hostname: &str,
    ip: Option<Ipv4Addr>,
    host: &str,
    dns: Option<(std::net::IpAddr, &str)>,
) -> Result<spec::EtcFiles, ContainerError> {
    let dir = sandbox.join(ETC_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| ContainerError::Io {
        what: "creating",
        path: dir.clone(),
        source,
    })?;
    // HOST networking: the agent's address names the container; an agent known only by
    // name gets the Debian-style 127.0.1.1.
    let own = match ip {
        Some(ip) => ip.to_string(),
        None => host.parse::<std::net::IpAddr>().map(|a| a.to_string()).unwrap_or_else(|_| "127.0.1.1".into()),
    };
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n{own}\t{hostname}\n"
    );
    let resolv = spec::resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(), dns);
    let files = spec::EtcFiles {
        hosts: dir.join("hosts"),
        hostname: dir.join("hostname"),
        resolv_conf: dir.join("resolv.conf"),
    };
    for (path, text) in
        [(&files.hosts, hosts), (&files.hostname, format!("{hostname}\n")), (&files.resolv_conf, resolv)]
    {
        std::fs::write(path, text).map_err(|source| ContainerError::Io {
            what: "writing",
            path: path.clone(),
            source,
        })?;
    }
    Ok(files)
}

/// Tears down what a dead executor left of its container: the container itself (and
/// whatever still runs in it), host-side network pieces, the address lease and the
/// image mount. Safe to call for any sandbox, also twice, also for a command task.
pub fn cleanup_leftovers(sandbox: &Path) {
    let spec: Option<ExecutorSpec> = fsutil::read_json(&sandbox.join(SPEC_FILE)).ok().flatten();
    let Some(spec) = spec else { return };
    let Some(task) = &spec.container else { return };
    let mut session = Session {
        id: run::container_id(&spec.task_id),
        task_id: spec.task_id.clone(),
        sandbox: sandbox.to_path_buf(),
        state_root: PathBuf::from(run::STATE_ROOT),
        ipam_dir: match &task.network {
            ContainerNetwork::Bridge { ipam_dir, .. } => Some(ipam_dir.clone()),
            _ => None,
        },
        network: !matches!(task.network, ContainerNetwork::Host),
        image: task.local_image.is_none().then(|| task.clone()),
        proxies: None,
        reserved: None,
        done: false,
    };
    session.teardown();
}
