//! The `danmaku` binary: parses the command line and runs the chosen role.

use std::process::ExitCode;

use danmaku::config::{self, Command};

fn main() -> ExitCode {
    let cli = match config::parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DANMAKU_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // The bench builds its own runtimes (one single-threaded runtime per worker process).
    let command = match cli.command {
        Command::Bench(args) => return danmaku::bench::run(*args),
        Command::BenchWorker(args) => return danmaku::bench::run_worker(args),
        Command::Token(args) => return danmaku::auth::token::run(args),
        command => command,
    };
    let threads = command.runtime_threads().unwrap_or(1);
    // Named so that an operator (and `bench/threads`) tells them from the fan-out threads in `top -H`.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("runtime")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Serve(args) => danmaku::server::serve(args).await,
            Command::Gateway(args) => danmaku::server::cluster::gateway(args).await,
            Command::Logic(args) => danmaku::server::cluster::logic(args).await,
            Command::Bench(_) | Command::BenchWorker(_) | Command::Token(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("danmaku: {e}");
            ExitCode::FAILURE
        }
    }
}
