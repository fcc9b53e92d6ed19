//! The agent's integration tests, one binary: a real agent against an in-test master
//! (`agent_loop`, `fetch`, `health_checks`, `confinement`, sharing `common`), real command
//! tasks through the executor (`process_runtime`), real containers through libcontainer (`containers`)
//! and the image store against a real registry (`image_store`). Run as root (cgroups,
//! mounts, namespaces). One area: `cargo nextest run -p plinth-agent --test agent -E
//! 'test(/^image_store::/)'`.
// why: test code (a panic is a failed test); clippy's allow-unwrap-in-tests covers only
// #[test] functions, not the helpers of an integration test.
#![allow(clippy::unwrap_used)]

mod common;

mod agent_loop;
mod confinement;
mod containers;
mod fetch;
mod health_checks;
mod image_store;
mod process_runtime;
