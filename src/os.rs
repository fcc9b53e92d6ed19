//! Node OS entry points: running as PID 1 and `plinth image ...`. Owned by the init/image work.
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

/// `plinth image ...`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the node image: vmlinuz + initramfs.img + cmdline, and optionally an ISO,
    /// raw/qcow2 disk images and a Vagrant libvirt box.
    Build(ImageBuildArgs),
    /// The master registry's images: list, pull, rm (client commands, `src/cli/image.rs`).
    #[command(flatten)]
    Registry(crate::cli::ImageRegistryCommand),
}

#[derive(Debug, clap::Args)]
pub struct ImageBuildArgs {
    /// Output directory (created if missing).
    #[arg(long, env = "PLINTH_IMAGE_OUT")]
    pub out: PathBuf,
    /// Kernel to boot; default: the newest /boot/vmlinuz-* (Debian's linux-image-amd64).
    #[arg(long, env = "PLINTH_IMAGE_KERNEL")]
    pub kernel: Option<PathBuf>,
    /// Kernel modules directory; default: /lib/modules/RELEASE of the kernel.
    #[arg(long, env = "PLINTH_IMAGE_MODULES")]
    pub modules: Option<PathBuf>,
    /// Extra kernel command-line words (repeatable), e.g. --cmdline plinth.master=http://10.0.0.1:8080
    #[arg(long)]
    pub cmdline: Vec<String>,
    /// Role preset: adds plinth.role=ROLE to the default command line.
    #[arg(long, value_parser = ["master", "agent", "standalone"])]
    pub role: Option<String>,
    /// Image manifest (plinth-image.toml); unknown keys are rejected.
    #[arg(long, env = "PLINTH_IMAGE_MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// Extra outputs: iso, disk, box (repeatable or comma-separated).
    #[arg(long = "format", value_delimiter = ',')]
    pub formats: Vec<plinth_image::Format>,
    /// Build every output (iso, disk, box).
    #[arg(long)]
    pub all: bool,
    /// Binary to install as /init; default: this plinth binary.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Carry /usr/bin/etcd (Debian's etcd-server), so master nodes booted with
    /// plinth.etcd_initial_cluster= run their own etcd member (the manifest's `etcd = true`).
    #[arg(long)]
    pub with_etcd: bool,
}

/// If this process is the init (PID 1, or invoked as `/init`), run the boot sequence and never return.
pub fn maybe_run_as_init() {
    if plinth_init::is_init() {
        plinth_init::run();
    }
}

pub fn run_image(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Build(args) => image_build(args),
        // Run by `main` on a runtime (they talk to the master); never routed here.
        ImageCommand::Registry(_) => anyhow::bail!("plinth image list|pull|rm need the client runtime"),
    }
}

fn image_build(args: ImageBuildArgs) -> anyhow::Result<()> {
    let mut manifest = match &args.manifest {
        Some(p) => plinth_image::Manifest::load(p)?,
        None => plinth_image::Manifest::default(),
    };
    if args.with_etcd {
        manifest.etcd = Some(true);
    }
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe().context("finding the running plinth binary")?,
    };
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.parse().with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        Err(_) => 0,
    };
    let mut formats = args.formats;
    if args.all {
        formats = vec![plinth_image::Format::Iso, plinth_image::Format::Disk, plinth_image::Format::Box];
    }
    let opts = plinth_image::BuildOptions {
        out: args.out,
        kernel: args.kernel,
        modules: args.modules,
        binary,
        role: args.role,
        cmdline: args.cmdline,
        manifest,
        formats,
        source_date_epoch,
    };
    let started = std::time::Instant::now();
    let report = plinth_image::build(&opts, &mut |line| eprintln!("{line}"))?;
    println!("built in {:.1}s:", started.elapsed().as_secs_f64());
    for o in &report.outputs {
        println!("  {}", o.display());
    }
    println!(
        "initramfs: {} KiB compressed ({} KiB without kernel modules), {} modules",
        report.initramfs_bytes / 1024,
        report.initramfs_bytes_without_modules / 1024,
        report.modules.len()
    );
    println!("cmdline: {}", report.cmdline);
    Ok(())
}
