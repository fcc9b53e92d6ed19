//! PID 1 of the Plinth node OS. It owns the boot of a node: mounts, kernel modules, network
//! (DHCP or static `ip=`), hostname, the data disk, starting and supervising the role
//! (`plinth master|agent|standalone`) named on the kernel command line, reaping zombies,
//! shutdown and reboot, and the node API (`:5052/node/v1/...`) for diagnostics.
//!
//! The boot sequence is data: [`plan::plan`] turns the kernel command line into a list of
//! [`plan::Phase`]s (pure, unit-tested per role); [`boot::Boot`] carries them out through the
//! [`system::System`] trait; [`pid1::run`] is the process around it.

pub mod api;
pub mod api_tls;
pub mod boot;
pub mod cmdline;
pub mod error;
pub mod log;
pub mod modules;
pub mod net;
pub mod pid1;
pub mod plan;
pub mod switchroot;
pub mod system;

pub use cmdline::KernelCmdline;
pub use error::InitError;
pub use pid1::{is_init, run};
pub use plan::{plan, Phase, PlanError, Role};
