//! `accountservice`: the account microservice of the "Go microservices" blog
//! series, rewritten in Rust.
//!
//! The binary has two faces. Without a subcommand it is the HTTP service
//! (accounts, health, metrics, quotes). `accountservice healthcheck` is a tiny
//! HTTP probe, so that an image built `FROM scratch` (no shell, no curl) can
//! still carry a Docker `HEALTHCHECK`.

mod app;
mod breaker;
mod cli;
mod memory;
mod metrics;
mod quote;
mod routes;
mod server;
mod store;

use std::process::ExitCode;

use clap::Parser;

use service_kit::cli::Command;
use service_kit::healthcheck;

use crate::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Healthcheck(args)) => healthcheck::run(&args),
        None => match server::run(cli.serve) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("accountservice: {err}");
                ExitCode::FAILURE
            }
        },
    }
}
