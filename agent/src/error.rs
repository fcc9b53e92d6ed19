//! The agent's one error type. Variants name the operation that failed and what it was
//! working on; the underlying cause is the `source`, never repeated in the message.
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot create directory {path}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read {path}")]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("cannot write {path}")]
    WriteFile { path: PathBuf, source: io::Error },
    #[error("cannot parse {path}")]
    ParseFile { path: PathBuf, source: serde_json::Error },
    #[error("cannot encode {what} as JSON")]
    Encode { what: &'static str, source: serde_json::Error },
    #[error("cannot bind the agent API to {addr}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("agent API server failed")]
    Serve { source: io::Error },
    #[error("master URL '{url}' is invalid: {reason}")]
    MasterUrl { url: String, reason: String },
    #[error("cannot build the HTTP client")]
    HttpClient { source: reqwest::Error },
    #[error("{path} holds no usable PEM CA certificate")]
    CaFile { path: PathBuf, source: reqwest::Error },
    #[error("{operation} request to {url} failed")]
    MasterRequest { operation: &'static str, url: String, source: reqwest::Error },
    #[error("master answered {operation} with HTTP {status}: {body}")]
    MasterStatus { operation: &'static str, status: u16, body: String },
    #[error("the master refused this node's bootstrap token ({body}); PXE-boot the node again for a new one")]
    BootstrapRefused { body: String },
    #[error("this node's certificate: {reason}")]
    Certificate { reason: String },
    #[error("the master refused this node a certificate ({body}); check the join token (--token-file)")]
    CertificateRefused { body: String },
    #[error("task id '{task_id}' is not usable: {reason}")]
    InvalidTaskId { task_id: String, reason: String },
    #[error("task {task_id} has no command: neither 'cmd' nor 'args' is set")]
    NoCommand { task_id: String },
    #[error("cannot start the executor {program} for task {task_id}")]
    SpawnExecutor { program: PathBuf, task_id: String, source: io::Error },
    #[error("cannot start the command {program} of task {task_id}")]
    SpawnTask { program: PathBuf, task_id: String, source: io::Error },
    #[error("cannot run task {task_id} as user '{user}': {reason}")]
    User { task_id: String, user: String, reason: String },
    #[error("cannot send {signal} to {target} {pid} of task {task_id}")]
    Signal { signal: &'static str, target: &'static str, pid: i32, task_id: String, source: nix::errno::Errno },
    #[error("cannot create cgroup {name}")]
    CgroupCreate { name: String, source: cgroups_rs::fs::error::Error },
    #[error("cannot remove cgroup {name}")]
    CgroupRemove { name: String, source: cgroups_rs::fs::error::Error },
    #[error("task {task_id} is not known to the {runtime} runtime")]
    UnknownTask { task_id: String, runtime: &'static str },
    #[error("the {runtime} runtime refused to launch task {task_id}: {reason}")]
    LaunchRejected { runtime: &'static str, task_id: String, reason: String },
}
