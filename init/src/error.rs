//! Errors of the init. Variants name the operation and what it was applied to.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("mounting {fstype} on {target}")]
    Mount {
        target: String,
        fstype: String,
        #[source]
        source: io::Error,
    },
    #[error("creating directory {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("loading kernel module {path}")]
    LoadModule {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setting hostname to {name:?}")]
    Hostname {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("leaving the initramfs ({step})")]
    SwitchRoot {
        step: String,
        #[source]
        source: io::Error,
    },
    #[error("network: {op} on {iface}")]
    Net {
        op: String,
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("DHCP on {iface}: {reason}")]
    Dhcp { iface: String, reason: String },
    #[error("starting the node API on port {port}")]
    NodeApi {
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("starting role {role}")]
    SpawnRole {
        role: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid boot plan")]
    Plan(#[from] crate::plan::PlanError),
}

pub type Result<T, E = InitError> = std::result::Result<T, E>;
