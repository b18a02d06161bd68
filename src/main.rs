//! goblog-lab: a real multi-node Docker Swarm on this machine, for the Go
//! microservices blog series. The CLI parses, runs one command, and turns
//! any error into one line on stderr and a non-zero exit; the work itself
//! is in the library (`src/lib.rs`).

use goblog_lab::{cli, commands, error};

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A Tab in a shell that sourced `goblog-lab completion SHELL`: print the
    // candidates and exit, before anything is parsed.
    clap_complete::CompleteEnv::with_factory(<cli::Cli as clap::CommandFactory>::command)
        .var(commands::completion::VAR)
        .complete();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return clap_error(err),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error::Error::Exit(code)) => ExitCode::from(code.clamp(1, 255) as u8),
        Err(err) => {
            eprintln!("goblog-lab: error: {err}");
            ExitCode::from(err.exit_code() as u8)
        }
    }
}

/// Help and version print as clap renders them; a usage error becomes one
/// line (`cli::usage_error_line`), like every other error.
fn clap_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        return if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let typed: Vec<String> = std::env::args().skip(1).collect();
    eprintln!(
        "goblog-lab: error: {}",
        cli::usage_error_line(&err.render().to_string(), &typed)
    );
    ExitCode::from(2)
}
