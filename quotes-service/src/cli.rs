//! Command-line and environment configuration: a flag on a laptop, the
//! environment (`docker service create -e ...`) in Swarm.
//!
//! The quotes-service has no flag of its own: all of them are the ones it
//! shares with the accountservice (`service_kit::cli`), under its own names.

use clap::{Args, Parser};
use service_kit::cli::{Command, DrainArgs, ListenArgs, Service};

/// The blog's quotes-service: `GET /api/quote?strength=N` answers a quote
/// and the address of the instance that answered, after CPU work that grows
/// with N; `GET /health` says whether it is up.
#[derive(Debug, Parser)]
#[command(name = "quotes-service", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command<QuotesService>>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The quotes-service's words in the flags it shares with the accountservice.
#[derive(Debug)]
pub struct QuotesService;

impl Service for QuotesService {
    const PORT_ENV: &'static str = "QUOTES_SERVICE_PORT";
    const DEFAULT_PORT: &'static str = "8080";
    const PORT_HELP: &'static str = "TCP port to listen on. 0 lets the kernel pick a free port; \
        the start-up line on stderr reports the real one";
    const BIND_ENV: &'static str = "QUOTES_SERVICE_BIND";
    const BIND_HELP: &'static str = "Address to bind. The default, all interfaces, suits a \
        container; use 127.0.0.1 when running on a host";
    const DRAIN_ENV: &'static str = "QUOTES_SERVICE_DRAIN_MS";
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub listen: ListenArgs<QuotesService>,

    #[command(flatten)]
    pub drain: DrainArgs<QuotesService>,
}
