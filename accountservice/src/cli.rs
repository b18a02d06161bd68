//! Command-line and environment configuration.
//!
//! Every setting can come from a flag or an environment variable, because in
//! Docker Swarm the environment (`docker service create -e ...`) is the
//! natural knob while a flag is handier on a laptop.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The blog's account microservice: accounts from redb, health, metrics and
/// quotes behind a circuit breaker.
#[derive(Debug, Parser)]
#[command(name = "accountservice", version, about)]
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
    #[arg(long, env = "ACCOUNTSERVICE_PORT", default_value_t = 6767)]
    pub port: u16,

    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TCP port to listen on. 0 lets the kernel pick a free port; the
    /// "Starting HTTP service at PORT" line then reports the real one.
    #[arg(long, env = "ACCOUNTSERVICE_PORT", default_value_t = 6767)]
    pub port: u16,

    /// Address to bind. The default, all interfaces, suits a container, where
    /// Docker publishes the port; use 127.0.0.1 when running on a host.
    #[arg(long, env = "ACCOUNTSERVICE_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// redb database file; created and seeded when missing.
    #[arg(long, env = "ACCOUNTSERVICE_DB", default_value = "accounts.db")]
    pub db: PathBuf,

    /// redb page cache in KiB. The data set is tiny; a big cache only costs RSS.
    #[arg(long, env = "ACCOUNTSERVICE_DB_CACHE_KIB", default_value_t = 256)]
    pub db_cache_kib: usize,

    /// Runtime threads. 1 runs everything on one thread (leanest); N > 1 a
    /// multi-threaded runtime with N workers. 0 (default) means one per CPU,
    /// at most 4: more threads only add memory for a service this small.
    #[arg(long, env = "ACCOUNTSERVICE_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Quote source, e.g. http://quotes-service:8080/api/quote?strength=4.
    /// Unset or empty: no quote in the account JSON. Plain http only.
    #[arg(long, env = "QUOTES_URL")]
    pub quotes_url: Option<String>,

    /// Whole-call timeout for one quote fetch (DNS, connect, response).
    #[arg(long, env = "QUOTES_TIMEOUT_MS", default_value_t = 500)]
    pub quotes_timeout_ms: u64,

    /// Consecutive quote failures that open the circuit breaker.
    #[arg(long, env = "QUOTES_BREAKER_THRESHOLD", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub quotes_breaker_threshold: u32,

    /// How long the open breaker answers the fallback before one trial call.
    #[arg(long, env = "QUOTES_BREAKER_PAUSE_MS", default_value_t = 5000)]
    pub quotes_breaker_pause_ms: u64,

    /// On SIGTERM/SIGINT, wait at most this long for in-flight requests.
    #[arg(long, env = "ACCOUNTSERVICE_DRAIN_MS", default_value_t = 5000)]
    pub drain_ms: u64,
}

impl ServeArgs {
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(4),
            n => n,
        }
    }

    pub fn quotes_url(&self) -> Option<&str> {
        self.quotes_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
    }

    pub fn quotes_timeout(&self) -> Duration {
        Duration::from_millis(self.quotes_timeout_ms)
    }

    pub fn breaker_pause(&self) -> Duration {
        Duration::from_millis(self.quotes_breaker_pause_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }
}
