//! The Vagrant playground's Vagrantfile is valid for the libvirt provider, with the default
//! number of agents and with `NODES=3` (Debian's `vagrant` + `vagrant-libvirt`, installed
//! by scripts/setup.sh from scripts/packages-pxe.txt).
use std::path::Path;
use std::process::Command;

fn validate(nodes: Option<&str>) -> std::process::Output {
    // A copy in a temp dir: validate must not leave .vagrant/ state in the work tree.
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("Vagrantfile");
    std::fs::copy(&source, dir.path().join("Vagrantfile")).expect("copy the Vagrantfile");
    let mut command = Command::new("vagrant");
    command.arg("validate").current_dir(dir.path()).env("VAGRANT_HOME", dir.path().join("home")).env("VAGRANT_CHECKPOINT_DISABLE", "1");
    if let Some(n) = nodes {
        command.env("NODES", n);
    }
    command.output().expect("run vagrant validate")
}

#[test]
fn vagrantfile_validates_for_libvirt_with_default_and_more_nodes() {
    if Command::new("vagrant").arg("--version").output().is_err() {
        eprintln!("vagrant is not installed (scripts/setup.sh installs it); skipping");
        return;
    }
    for nodes in [None, Some("3")] {
        let out = validate(nodes);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("validated successfully"), "NODES={nodes:?}: {text}");
    }
    let out = validate(Some("many"));
    assert!(!out.status.success(), "a NODES that is not a number is an error");
}
