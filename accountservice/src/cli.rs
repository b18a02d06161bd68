//! Command-line and environment configuration.
//!
//! Every setting can come from a flag or an environment variable, because in
//! Docker Swarm the environment (`docker service create -e ...`) is the
//! natural knob while a flag is handier on a laptop.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use service_kit::cli::{Command, DrainArgs, ListenArgs, Service};

/// The blog's account microservice: accounts from redb, health, metrics and
/// quotes behind a circuit breaker.
#[derive(Debug, Parser)]
#[command(name = "accountservice", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command<Accountservice>>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The accountservice's words in the flags it shares with the quotes-service.
#[derive(Debug)]
pub struct Accountservice;

impl Service for Accountservice {
    const PORT_ENV: &'static str = "ACCOUNTSERVICE_PORT";
    const DEFAULT_PORT: &'static str = "6767";
    const PORT_HELP: &'static str = "TCP port to listen on. 0 lets the kernel pick a free port; \
        the \"Starting HTTP service at PORT\" line then reports the real one";
    const BIND_ENV: &'static str = "ACCOUNTSERVICE_BIND";
    const BIND_HELP: &'static str = "Address to bind. The default, all interfaces, suits a \
        container, where Docker publishes the port; use 127.0.0.1 when running on a host";
    const DRAIN_ENV: &'static str = "ACCOUNTSERVICE_DRAIN_MS";
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub listen: ListenArgs<Accountservice>,

    /// redb database file; created and seeded when missing.
    #[arg(long, env = "ACCOUNTSERVICE_DB", default_value = "accounts.db")]
    pub db: PathBuf,

    /// redb page cache in KiB. The data set is tiny; a big cache only costs RSS.
    #[arg(long, env = "ACCOUNTSERVICE_DB_CACHE_KIB", default_value_t = 256)]
    pub db_cache_kib: usize,

    /// Serving threads, each a single-threaded runtime with its own listener
    /// on the port (SO_REUSEPORT). 0 (default) means one per CPU, at most 4:
    /// more threads only add memory for a service this small.
    #[arg(long, env = "ACCOUNTSERVICE_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Quote source, e.g. http://quotes-service:8080/api/quote?strength=4.
    /// Unset or empty: no quote in the account JSON. Plain http only.
    #[arg(long, env = "QUOTES_URL")]
    pub quotes_url: Option<String>,

    /// Whole-call timeout for one quote fetch (DNS, connect, response).
    #[arg(long, env = "QUOTES_TIMEOUT_MS", default_value_t = 500)]
    pub quotes_timeout_ms: u64,

    /// Quote calls this replica lets wait at once; past them a request gets
    /// the fallback quote at once (a bulkhead), so a saturated quotes
    /// service costs a fallback, not a queue.
    #[arg(long, env = "QUOTES_MAX_IN_FLIGHT", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub quotes_max_in_flight: u64,

    /// Consecutive quote failures that open the circuit breaker.
    #[arg(long, env = "QUOTES_BREAKER_THRESHOLD", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub quotes_breaker_threshold: u32,

    /// How long the open breaker answers the fallback before one trial call.
    #[arg(long, env = "QUOTES_BREAKER_PAUSE_MS", default_value_t = 5000)]
    pub quotes_breaker_pause_ms: u64,

    // Last, where --drain-ms has always been in --help.
    #[command(flatten)]
    pub drain: DrainArgs<Accountservice>,
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
}
