//! The `lockkeeper` binary: parse, configure, run. The work lives in the agent's modules
//! (src/lib.rs) and the lock library.

use std::process::ExitCode;

use clap::Parser;
use lockkeeper_agent::cli::{Cli, Command};
use lockkeeper_agent::config::{self, ConfigError};
use lockkeeper_agent::{exec, sidecar, telemetry, wait};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(args) => match config::load(&args, &config::system_env) {
            Ok(cfg) => with_runtime(&cfg, sidecar::run(cfg.clone())),
            Err(e) => config_error(e),
        },
        Command::Exec(args) => match config::load_exec(&args, &config::system_env) {
            Ok(cfg) => with_runtime(&cfg, exec::run(cfg.clone(), args.command.clone())),
            Err(e) => config_error(e),
        },
        Command::Wait(args) => runtime().block_on(async {
            match wait::wait_until_held(&args.url, args.timeout, args.poll_interval).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("lockkeeper wait: {e}");
                    e.exit_code()
                }
            }
        }),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn config_error(e: ConfigError) -> i32 {
    eprintln!("lockkeeper: {e}");
    ConfigError::EXIT_CODE
}

fn with_runtime(cfg: &config::Config, fut: impl std::future::Future<Output = i32>) -> i32 {
    if let Err(e) = telemetry::init_from_config(cfg) {
        return config_error(e);
    }
    runtime().block_on(fut)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}
