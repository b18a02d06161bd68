//! `quotes-service`: the quote service of the "Go microservices" blog series
//! (parts 5 and 7), rewritten in Rust so a lab can run it offline.
//!
//! The blog's Java service answers `/api/quote` with a quote and the address
//! of the instance that answered, after burning CPU in proportion to
//! `strength`; the accountservice calls it behind a circuit breaker. Like the
//! accountservice, `quotes-service healthcheck` probes the running service,
//! for the `HEALTHCHECK` of an image built `FROM scratch`.

mod cli;
mod quotes;
mod routes;
mod server;
mod work;

use std::process::ExitCode;

use clap::Parser;

use service_kit::cli::Command;
use service_kit::healthcheck;

use crate::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Healthcheck(args)) => healthcheck::run(&args),
        None => match server::run(&cli.serve) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("quotes-service: {err}");
                ExitCode::FAILURE
            }
        },
    }
}
