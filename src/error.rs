//! One error type for the whole CLI.
//!
//! Every failure a user can meet ends as a single line on stderr and a
//! non-zero exit, so each variant carries enough context (what we were doing,
//! which lab, which file and line) to be read without a backtrace.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input the user can fix by changing the command line.
    #[error("{0}")]
    Usage(String),

    #[error("cannot reach the Docker daemon at {host}: {reason} (is dockerd running? `scripts/setup.sh` installs and starts one)")]
    NoDaemon { host: String, reason: String },

    #[error("the Docker daemon at {host} speaks API {found}, but goblog-lab needs {needed} or newer (Docker 19.03+): upgrade Docker")]
    DaemonTooOld {
        host: String,
        found: String,
        needed: String,
    },

    #[error(
        "lab '{0}' already exists: use it, or remove it first with `goblog-lab destroy --name {0}`"
    )]
    LabExists(String),

    #[error("lab '{0}' is stopped: start it with `goblog-lab start --name {0}`")]
    LabStopped(String),

    #[error("lab '{lab}' has no manager answering ({why}); it was not stopped with `goblog-lab stop`: `goblog-lab start --name {lab}` starts its stopped nodes again")]
    NoManagerAnswers { lab: String, why: String },

    #[error("no lab named '{0}': create one with `goblog-lab create --name {0}` (`goblog-lab ls` lists labs)")]
    LabNotFound(String),

    #[error("port {port} on 127.0.0.1 is already in use ({purpose}): free it or choose another with {flag}")]
    PortInUse {
        port: u16,
        purpose: &'static str,
        flag: &'static str,
    },

    #[error("{path}:{line}:{column}: {message}")]
    Spec {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("{action}: {message}")]
    Docker { action: String, message: String },

    #[error("{action}: {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },

    #[error("the lab registry did not answer on {url}: {last}")]
    RegistryDown { url: String, last: String },

    #[error("making the lab's TLS certificates: {0}")]
    Pki(String),

    #[error("no free /24 left in 172.28.0.0/14 for the lab network: remove unused Docker networks (`docker network prune`) or labs (`goblog-lab ls`)")]
    NoFreeSubnet,

    #[error("the Docker engine of {node} did not answer on {host} within {seconds}s")]
    EngineSilent {
        node: String,
        host: String,
        seconds: u64,
    },

    #[error("node {node} stopped ({why})")]
    NodeStopped { node: String, why: String },

    #[error(transparent)]
    Ssh(#[from] crate::ssh::SshError),

    /// A machine in docker-machine's store that cannot be adopted (the
    /// docker-machine provider's own error, which says which and why).
    #[error(transparent)]
    DockerMachine(Box<dyn std::error::Error + Send + Sync>),

    /// A host an ssh lab would use is not fit for it; nothing was changed.
    #[error("{host}: {reason}")]
    HostUnfit { host: String, reason: String },

    #[error("could not give back {failed} of {total} hosts ({first}): run `goblog-lab destroy --name {lab}` again once they answer, or add --force to forget the lab here and clean them by hand")]
    HostsNotGivenBack {
        lab: String,
        failed: usize,
        total: usize,
        first: String,
    },

    /// A command the lab ran on a machine failed.
    #[error("{node}: `{command}` exited with {status}: {output}")]
    Remote {
        node: String,
        command: String,
        status: i64,
        output: String,
    },

    /// A program this machine lacks; `install` says how to get it.
    #[error("{what} needs `{program}`, which is not installed: {install}")]
    MissingProgram {
        what: &'static str,
        program: &'static str,
        install: &'static str,
    },

    /// A program goblog-lab ran on this machine failed.
    #[error("{command} failed ({status}): {output}")]
    Local {
        command: String,
        status: String,
        output: String,
    },

    /// The VM driver needs root (bridges, taps, iptables) and did not have it.
    #[error("the {driver} driver makes a bridge and tap devices for the lab's host-only network, which needs root: run it with sudo (or use --driver dind)")]
    NeedsRoot { driver: &'static str },

    #[error("no free 192.168.X.0/24 left for a VM lab's host-only network (99 to 254 are all in use): destroy a VM lab (`goblog-lab ls`)")]
    NoFreeVmNetwork,

    /// A VM that did not come up; its console log says why.
    #[error("VM {vm} {what}: see its console log, {console}")]
    VmFailed {
        vm: String,
        what: String,
        console: String,
    },

    /// A blocking finding of `goblog-lab doctor`: the cause and its fix.
    #[error("{0}")]
    NotReady(String),

    #[error("--routing mesh needs IPVS, which this kernel lacks ({why}): use --routing auto (the edge proxy stands in) or a kernel with ip_vs")]
    NoIpvs { why: String },

    #[error("cannot build {package}: no Cargo.toml in {root} (run goblog-lab from its checkout, or give --file a lab definition inside one)")]
    NotACheckout { package: String, root: String },

    /// cargo's own first error line says what to fix in the sources.
    #[error("cargo build of {packages} (profile {profile}) failed: {first_error}")]
    ServiceBuild {
        packages: String,
        profile: &'static str,
        first_error: String,
        /// cargo's whole report (every error, with its source lines), for a
        /// caller that shows more than one line: a learner's terminal.
        diagnostics: String,
    },

    /// Swarm rolled back or paused an update; `why` is a task's own error.
    #[error("Swarm stopped the update of {service} ({message}){why}: `docker service ps {service}` shows each task")]
    UpdateStopped {
        service: String,
        message: String,
        why: String,
    },

    /// Fewer replicas ran than wanted when the wait ran out.
    #[error("{service} has {running}/{replicas} replicas running after {seconds}s{why}: `docker service ps {service}` shows each task")]
    ReplicasNotRunning {
        service: String,
        running: u64,
        replicas: u64,
        seconds: u64,
        why: String,
    },

    /// The service runs but does not answer through `$ManagerIP`.
    #[error("{url} did not answer within {seconds}s: {last}")]
    NoAnswer {
        url: String,
        seconds: u64,
        last: String,
    },

    /// A step that failed for a reason of its own (a timeout, a dead node).
    #[error("{0}")]
    Failed(String),

    #[error("interrupted")]
    Interrupted,

    /// A command run inside a node failed; its own output said why, so
    /// goblog-lab only passes the exit code on.
    #[error("the command exited with {0}")]
    Exit(i32),
}

impl Error {
    pub fn failed(message: impl fmt::Display) -> Self {
        Error::Failed(message.to_string())
    }

    pub fn usage(message: impl fmt::Display) -> Self {
        Error::Usage(message.to_string())
    }

    /// Exit status: 2 for what the user typed, 130 for Ctrl-C, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Spec { .. } | Error::NeedsRoot { .. } => 2,
            Error::DockerMachine(_) => 2,
            Error::Interrupted => 130,
            Error::Exit(code) => *code,
            _ => 1,
        }
    }
}

/// Turns the Docker engine's verbose errors into the part a person needs.
pub fn docker_message(err: &bollard::errors::Error) -> String {
    use bollard::errors::Error as B;
    let text = match err {
        B::DockerResponseServerError { message, .. } => message.clone(),
        B::DockerStreamError { error } => error.clone(),
        B::DockerContainerWaitError { error, .. } => error.clone(),
        other => other.to_string(),
    };
    // One line, always: engine messages sometimes carry a trailing newline
    // or a multi-line runc report.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Adds "what we were doing" to errors from Docker and the file system.
pub trait Context<T> {
    fn context(self, action: impl fmt::Display) -> Result<T>;
    fn with_context<F: FnOnce() -> String>(self, action: F) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, bollard::errors::Error> {
    fn context(self, action: impl fmt::Display) -> Result<T> {
        self.map_err(|err| Error::Docker {
            action: action.to_string(),
            message: docker_message(&err),
        })
    }
    fn with_context<F: FnOnce() -> String>(self, action: F) -> Result<T> {
        self.map_err(|err| Error::Docker {
            action: action(),
            message: docker_message(&err),
        })
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, action: impl fmt::Display) -> Result<T> {
        self.map_err(|source| Error::Io {
            action: action.to_string(),
            source,
        })
    }
    fn with_context<F: FnOnce() -> String>(self, action: F) -> Result<T> {
        self.map_err(|source| Error::Io {
            action: action(),
            source,
        })
    }
}

/// A malformed `USER@HOST[:PORT]` is something the user typed.
impl From<crate::ssh::TargetParseError> for Error {
    fn from(err: crate::ssh::TargetParseError) -> Self {
        Error::Usage(err.to_string())
    }
}
