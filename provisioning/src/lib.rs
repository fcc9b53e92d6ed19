//! PXE provisioning: DHCP decisions (pure), TFTP and HTTP boot files, machine profiles.
