//! Stand-alone form of `plinth executor --spec PATH` (and of `plinth task-init`), used by
//! this crate's tests.
fn main() {
    // The executor starts this binary again as a command task's init.
    plinth_agent::task_init::maybe_run();
    let mut args = std::env::args_os().skip(1);
    let spec = match (args.next(), args.next()) {
        (Some(flag), Some(path)) if flag == "--spec" => std::path::PathBuf::from(path),
        _ => {
            eprintln!("usage: plinth-agent-executor --spec PATH");
            std::process::exit(2);
        }
    };
    std::process::exit(plinth_agent::executor::run(&spec));
}
