//! Command-line and environment configuration: a flag on a laptop, the
//! environment (`docker service create -e ...`) in Swarm.

use std::net::IpAddr;

use clap::{Args, Parser, Subcommand};

/// The blog's quotes-service: `GET /api/quote?strength=N` answers a quote
/// and the address of the instance that answered, after CPU work that grows
/// with N; `GET /health` says whether it is up.
#[derive(Debug, Parser)]
#[command(name = "quotes-service", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe a running service's /health on 127.0.0.1; exit 0 when it answers
    /// 200, 1 otherwise. Meant for a Docker HEALTHCHECK in a FROM scratch image.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Port of the service to probe.
    #[arg(long, env = "QUOTES_SERVICE_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TCP port to listen on. 0 lets the kernel pick a free port; the
    /// start-up line on stderr reports the real one.
    #[arg(long, env = "QUOTES_SERVICE_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to bind. The default, all interfaces, suits a container; use
    /// 127.0.0.1 when running on a host.
    #[arg(long, env = "QUOTES_SERVICE_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// On SIGTERM/SIGINT, wait at most this long for in-flight requests.
    #[arg(long, env = "QUOTES_SERVICE_DRAIN_MS", default_value_t = 5000)]
    pub drain_ms: u64,
}
