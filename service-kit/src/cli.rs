//! The flags both services take, as clap groups each service flattens into
//! its own command line.
//!
//! Both listen on `--port` and `--bind`, drain for `--drain-ms` on SIGTERM,
//! and carry the same `healthcheck` subcommand. Only the environment
//! variables, the default port and a few words of help differ; a service
//! states those once in a [`Service`] impl, so the probe's `--port` can never
//! drift from the one the service listens on.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Subcommand};

/// What the shared flags say differently in each service.
pub trait Service {
    /// The environment variable behind `--port`, for serving and probing.
    const PORT_ENV: &'static str;
    /// The default of `--port`, as clap shows it.
    const DEFAULT_PORT: &'static str;
    /// The help of `--port`: each service names the line that reports the
    /// port it got.
    const PORT_HELP: &'static str;
    /// The environment variable behind `--bind`.
    const BIND_ENV: &'static str;
    /// The help of `--bind`.
    const BIND_HELP: &'static str;
    /// The environment variable behind `--drain-ms`.
    const DRAIN_ENV: &'static str;
}

/// Where the service listens.
#[derive(Debug, Args)]
pub struct ListenArgs<S: Service> {
    #[arg(long, env = S::PORT_ENV, default_value = S::DEFAULT_PORT, help = S::PORT_HELP)]
    pub port: u16,

    #[arg(long, env = S::BIND_ENV, default_value = "0.0.0.0", help = S::BIND_HELP)]
    pub bind: IpAddr,

    #[arg(skip)]
    _service: PhantomData<S>,
}

impl<S: Service> ListenArgs<S> {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}

/// How long a stopping service waits for its requests.
#[derive(Debug, Args)]
pub struct DrainArgs<S: Service> {
    /// On SIGTERM/SIGINT, wait at most this long for in-flight requests.
    #[arg(long, env = S::DRAIN_ENV, default_value_t = 5000)]
    pub drain_ms: u64,

    #[arg(skip)]
    _service: PhantomData<S>,
}

impl<S: Service> DrainArgs<S> {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command<S: Service> {
    /// Probe a running service's /health on 127.0.0.1; exit 0 when it answers
    /// 200, 1 otherwise. Meant for a Docker HEALTHCHECK in a FROM scratch image.
    Healthcheck(HealthcheckArgs<S>),
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs<S: Service> {
    /// Port of the service to probe.
    #[arg(long, env = S::PORT_ENV, default_value = S::DEFAULT_PORT)]
    pub port: u16,

    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,

    #[arg(skip)]
    _service: PhantomData<S>,
}

impl<S: Service> HealthcheckArgs<S> {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug)]
    struct Demo;

    impl Service for Demo {
        const PORT_ENV: &'static str = "SERVICE_KIT_TEST_PORT";
        const DEFAULT_PORT: &'static str = "7070";
        const PORT_HELP: &'static str = "Port";
        const BIND_ENV: &'static str = "SERVICE_KIT_TEST_BIND";
        const BIND_HELP: &'static str = "Bind";
        const DRAIN_ENV: &'static str = "SERVICE_KIT_TEST_DRAIN_MS";
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Option<Command<Demo>>,
        #[command(flatten)]
        listen: ListenArgs<Demo>,
        #[command(flatten)]
        drain: DrainArgs<Demo>,
    }

    #[test]
    fn the_groups_make_a_valid_command_line() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_probe_defaults_to_the_port_the_service_listens_on() {
        let serve = Cli::try_parse_from(["demo"]).unwrap();
        assert_eq!(serve.listen.addr(), "0.0.0.0:7070".parse().unwrap());
        assert_eq!(serve.drain.timeout(), Duration::from_secs(5));
        let probe = Cli::try_parse_from(["demo", "healthcheck"]).unwrap();
        let Some(Command::Healthcheck(args)) = probe.command else {
            panic!("no healthcheck in {probe:?}");
        };
        assert_eq!(args.port, 7070);
        assert_eq!(args.timeout(), Duration::from_secs(2));
    }

    #[test]
    fn flags_override_the_defaults() {
        let cli = Cli::try_parse_from(["demo", "--port", "1", "--bind", "127.0.0.1"]).unwrap();
        assert_eq!(cli.listen.addr(), "127.0.0.1:1".parse().unwrap());
        assert!(Cli::try_parse_from(["demo", "--port", "nope"]).is_err());
    }
}
