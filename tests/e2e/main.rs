//! Plinth's end-to-end tests, one binary: real `plinth` processes (masters and agents, each
//! in a network namespace of its own on a private bridge), real containers and registries,
//! VMs booting the built image under QEMU, PXE, and the Vagrant playground. One module per
//! area; `common` is the cluster harness, `vm_common` the VM harness. Run one area with
//! `cargo nextest run -p plinth --test e2e -E 'test(/^cluster_faults::/)'`.

mod common;
mod vm_common;

mod cli_images;
mod cluster_apps;
mod cluster_auth;
mod cluster_bad_input;
mod cluster_confinement;
mod cluster_events;
mod cluster_faults;
mod cluster_ha;
mod cluster_identity;
mod cluster_load;
mod cluster_mtls;
mod cluster_standalone;
mod containers;
mod fuzz_short;
mod health_checks;
mod health_marathon;
mod marathon_client;
mod pxe_boot;
mod pxe_vagrant;
mod service_dns;
mod service_lb;
mod task_timeline;
mod ui;
mod vm_cluster;
mod vm_etcd;
mod vm_faults;
mod vm_image;
mod vm_standalone;
