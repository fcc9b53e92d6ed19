//! PXE provisioning: the DHCP decision (pure: a request and the machine table in, a
//! reply or a reason to ignore out), single-use bootstrap tokens for booting machines (pure), machine profiles (role, hostname, attributes and
//! extra kernel command line per MAC), the iPXE script for a machine, a read-only TFTP
//! server for firmware that only speaks PXE, the lease/profile store, and the thin UDP
//! shell that binds DHCP (67, 4011) and TFTP (69) to the PXE interface.
pub mod bootstrap;
pub mod dhcp;
pub mod mac;
pub mod profile;
pub mod serve;
pub mod store;
pub mod tftp;

pub use dhcp::{Decision, DhcpConfig, DhcpMode, IgnoreReason, LeaseTable};
pub use mac::MacAddr;
pub use profile::{BootParams, DefaultProfile, MachineProfile, ProfileError, Role};
pub use store::{ProvisioningStore, StoreError};
