//! The short fuzz run of the test command (README.md, "Fuzzing"): `scripts/fuzz.sh` builds
//! every target in fuzz/ with cargo-fuzz on the stable toolchain and runs each for a few
//! seconds from the seeds in fuzz/corpus/; no input may crash one.
use std::path::Path;
use std::process::Command;

const SECONDS: &str = "10";

/// The targets fuzz/Cargo.toml declares (`[[bin]] name = "..."`).
fn declared_targets(root: &Path) -> Vec<String> {
    let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let (true, Some(name)) = (in_bin, line.strip_prefix("name = ")) {
            names.push(name.trim_matches('"').to_string());
        }
    }
    names
}

#[test]
fn every_fuzz_target_runs_from_its_seeds_without_a_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let targets = declared_targets(root);
    assert_eq!(targets.len(), 6, "fuzz/Cargo.toml declares {targets:?}");
    for target in &targets {
        let seeds = std::fs::read_dir(root.join("fuzz/corpus").join(target)).map(Iterator::count).unwrap_or(0);
        assert!(seeds >= 3, "fuzz/corpus/{target}/ has {seeds} seeds");
    }

    // As from a shell: what the test runner adds for this package (CARGO_PKG_*, its
    // LD_LIBRARY_PATH, ...) would make cargo rebuild the fuzz crate after every shell run.
    let mut command = Command::new("bash");
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let from_runner = (name.starts_with("CARGO") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR")
            || name.starts_with("NEXTEST")
            || name == "LD_LIBRARY_PATH";
        if from_runner {
            command.env_remove(name.as_ref());
        }
    }
    let output = command.arg(root.join("scripts/fuzz.sh")).arg(SECONDS).output().expect("run scripts/fuzz.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "scripts/fuzz.sh {SECONDS} failed:\n{stdout}\n{stderr}");

    // The summary: `TARGET EXECUTIONS EXECS/S COV FT CORPUS ok`, one line per target.
    for target in &targets {
        let row: Vec<&str> = stdout
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&target.as_str()) && cols.len() == 7)
            .unwrap_or_else(|| panic!("no summary line for {target}:\n{stdout}"));
        let executions: u64 = row[1].parse().unwrap_or_else(|_| panic!("{target}: executions {:?}", row[1]));
        let coverage: u64 = row[3].parse().unwrap_or_else(|_| panic!("{target}: coverage {:?}", row[3]));
        assert!(executions >= 100, "{target} ran only {executions} inputs in {SECONDS} s:\n{stdout}");
        assert!(coverage > 0, "{target} reached no code:\n{stdout}");
        assert_eq!(row[6], "ok", "{target}: {stdout}");
    }
}
