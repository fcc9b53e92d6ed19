//! Test helpers with real parts, shared by the crates' integration tests and the
//! end-to-end tests: OCI images built here (from Debian's `busybox-static`, or layer by
//! layer, hostile ones included) and Debian's `docker-registry` started on loopback
//! (optionally inside a test's network namespace), with pushes over the registry API; and
//! Debian's `etcd-server` (one member in its own namespace, or a cluster in the test's),
//! the harnesses' common waiting and port helpers; Marathon's JSON shapes as golden
//! fixtures and the check of a response against them (`contract`).
pub mod contract;
pub mod etcd;
pub mod image;
pub mod netns;
pub mod registry;
pub mod wait;

pub use etcd::Etcd;
pub use image::{busybox_hello, busybox_hello_with, BuiltImage, Compression, Entry, ImageConfig, Layer};
pub use registry::Registry;
pub use wait::{free_port, wait_until};
