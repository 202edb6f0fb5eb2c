//! The `bkd` binary: parse, set up logging, run, map the result to an exit code.

fn main() {
    // The sandbox probe and the daemon guardian must run before any
    // thread exists.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args.get(1).map(String::as_str) {
        Some(bkd::daemon::probe::SANDBOX_PROBE_ARG) => {
            std::process::exit(bkd::daemon::probe::run_sandbox_probe())
        }
        Some(bkd::daemon::process::GUARD_ARG) => {
            std::process::exit(bkd::daemon::process::run_guard(&args[2..]))
        }
        _ => {}
    }
    // A panic is a bug in bkd. Its message may hold anything the failing
    // code had at hand, credentials included, so only the place is shown.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error{at}: this is a bug in bkd, please report it");
    }));
    // Lets the tests prove that a panic's message never reaches the user.
    if let Some(text) = std::env::var_os("BKD_TEST_PANIC") {
        panic!("test panic carrying {text:?}");
    }
    let invocation = bkd::cli::Invocation::from_args(args);
    let filter = if invocation.debug() {
        "bkd=debug"
    } else {
        "bkd=warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BKD_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    // One thread for all tasks: the session's connections, the tunnel and
    // the transfers hand data to each other at every frame, and across
    // worker threads each hand-over is a wake-up and a context switch.
    // Blocking work (the walk, cold file reads, outputs) has its own
    // threads. Context upload, 575 MB / 20,005 files: client CPU 0.47 s
    // against 0.54 s with a worker per core, the same wall time.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(bkd::error::exit::INPUT);
        }
    };
    let result = runtime.block_on(bkd::cli::run(invocation));
    // Blocking readers of an aborted transfer must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
