//! Which boot client sent a request (iPXE, PXE firmware by architecture, or a plain
//! DHCP client) and the boot file each one gets.
use dhcproto::v4::{self, Architecture, DhcpOption, OptionCode};

use super::{ClientKind, DhcpConfig, IgnoreReason};

/// TFTP boot file for BIOS firmware (iPXE that chains via the firmware's UNDI driver).
pub const BIOS_BOOTFILE: &str = "undionly.kpxe";
/// TFTP boot file for x86-64 UEFI firmware.
pub const UEFI_BOOTFILE: &str = "ipxe.efi";

pub(super) fn classify(msg: &v4::Message) -> Result<ClientKind, IgnoreReason> {
    let opts = msg.opts();
    let user_class_ipxe = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(bytes)) => bytes.windows(4).any(|w| w == b"iPXE"),
        _ => false,
    };
    if user_class_ipxe || opts.get(OptionCode::Unknown(175)).is_some() {
        return Ok(ClientKind::Ipxe);
    }
    let pxe = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(bytes)) => bytes.starts_with(b"PXEClient"),
        _ => false,
    };
    if !pxe {
        return Ok(ClientKind::Plain);
    }
    match opts.get(OptionCode::ClientSystemArchitecture) {
        None => Ok(ClientKind::PxeBios),
        Some(DhcpOption::ClientSystemArchitecture(arch)) => match u16::from(*arch) {
            0 => Ok(ClientKind::PxeBios),
            7 | 9 => Ok(ClientKind::PxeUefi),
            other => Err(IgnoreReason::UnsupportedArch(other)),
        },
        Some(_) => Ok(ClientKind::PxeBios),
    }
}

pub(super) fn bootfile(client: ClientKind, config: &DhcpConfig) -> Option<String> {
    match client {
        ClientKind::Ipxe => Some(format!("{}/boot/ipxe?mac=${{mac}}", config.http_base.trim_end_matches('/'))),
        ClientKind::PxeBios => Some(BIOS_BOOTFILE.to_string()),
        ClientKind::PxeUefi => Some(UEFI_BOOTFILE.to_string()),
        ClientKind::Plain => None,
    }
}

/// Architecture numbers for tests and logs.
pub fn arch_number(arch: Architecture) -> u16 {
    u16::from(arch)
}
