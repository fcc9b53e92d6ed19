//! `plinth bench ...`: the benchmarks, side by side with what a user would run instead,
//! results printed and written as JSON (summarised in BENCHMARKS.md). A crate of its own so
//! that the product binary links neither the benchmarks nor the test kit they build images
//! with: the root package compiles them in only with its `bench` feature.
//!
//! - `scheduler`: the real scheduler core and store against in-process fake agents;
//! - `boot`: the node image booted in QEMU (software emulation), timed;
//! - `pxe`: a diskless QEMU PXE-booting from a real master, timed;
//! - `containers`: Docker images through Plinth against podman, libcontainer against crun/runc;
//! - `failover`: a new leader's state load and kill -9 failover on etcd, beside a redb restart;
//! - `burst`: 100 apps × 10 instances POSTed at once, until every task runs (fake and real agents);
//! - `reads`: API read storms (1, 16, 64 readers) against one writer and the agents' liveness;
//! - `lb`: the agent's service balancer against HAProxy as marathon-lb runs it, under `wrk`.
pub mod boot;
pub mod burst;
pub mod containers;
pub mod failover;
mod first_answer;
pub mod lb;
pub mod pxe;
pub mod reads;
pub mod scheduler;
mod series;
pub mod standalone;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The real scheduler core against in-process fake agents: placements/s, peak memory.
    Scheduler {
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        #[arg(long, default_value_t = 1_000_000)]
        tasks: usize,
    },
    /// Boot a standalone node image in QEMU and time it (ping, agent registered, first task).
    Boot(boot::BenchBootArgs),
    /// PXE-boot a diskless QEMU from a master and time it (iPXE script, kernel, agent, first task).
    Pxe(pxe::BenchPxeArgs),
    /// Docker images: POST → TASK_RUNNING (cached, cold) against podman, and create+start against crun/runc.
    Containers(containers::BenchContainersArgs),
    /// Failover: state load of a new leader (etcd vs redb) and kill -9 → first acknowledged write.
    Failover(failover::BenchFailoverArgs),
    /// A burst: 100 apps x 10 instances POSTed at once against 10 fake agents, then a few dozen real tasks on 2 agents.
    Burst(burst::BenchBurstArgs),
    /// Read storms: `GET /v2/apps` p50/p99 with 1, 16 and 64 readers, POST latency beside them, agents kept.
    Reads(reads::BenchReadsArgs),
    /// Service ports: the agent's balancer beside marathon-lb's HAProxy under wrk (req/s, p50/p99,
    /// CPU per request), and failed requests while the app scales 3 -> 1.
    Lb(lb::BenchLbArgs),
    /// Internal: one backend of `plinth bench lb` (an HTTP server on PORT; the bench's app runs it).
    #[command(hide = true)]
    LbBackend {
        #[arg(long)]
        port: u16,
    },
}

/// Runs one benchmark; each prints its own report (and writes `--out` where it has one).
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Scheduler { agents, tasks } => {
            let report = scheduler::run_scheduler_bench(agents, tasks).context("scheduler benchmark")?;
            println!("{report}");
            Ok(())
        }
        BenchCommand::Boot(args) => boot::run_bench_boot(args).map(drop),
        BenchCommand::Pxe(args) => pxe::run(args).map(drop),
        BenchCommand::Containers(args) => containers::run(args).map(drop),
        BenchCommand::Reads(args) => reads::run(args).map(drop),
        BenchCommand::Burst(args) => burst::run(args).map(drop),
        BenchCommand::Failover(args) => failover::run(args),
        BenchCommand::Lb(args) => lb::run(args),
        BenchCommand::LbBackend { port } => lb::serve_backend(port),
    }
}
