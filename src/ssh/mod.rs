//! SSH to lab machines, with the `ssh2` crate (libssh2).
//!
//! `--driver ssh` builds a lab on machines the user already has: it runs
//! commands on them as root, writes files (daemon.json, TLS keys) and
//! reaches their Docker daemon and registry through tunnels. libssh2 is used
//! rather than the `ssh` binary so that host key checking, authentication and
//! errors are under our control and read the same on every platform.
//!
//! libssh2 is blocking; everything here runs it on tokio's blocking pool or
//! on dedicated threads and offers async functions.
//!
//! The module depends only on external crates and `crate::retry` (which
//! depends on tokio alone), so the integration tests can compile it
//! directly with `#[path]`, beside that one module.

// Parts are used by the CLI, all by the tests that include this module; each
// user sees some as dead.
#![allow(dead_code)]

mod auth;
mod error;
mod known_hosts;
mod session;
mod target;
mod tunnel;

// Re-exported for the CLI and the tests; each uses a different part.
#[allow(unused_imports)]
pub use auth::{key_needs_passphrase, Credentials};
#[allow(unused_imports)]
pub use error::{ChangedHostKey, SshError};
#[allow(unused_imports)]
pub use known_hosts::{fingerprint, HostKey, HostKeys};
#[allow(unused_imports)]
pub use session::{settle, Output, SshClient};
#[allow(unused_imports)]
pub use target::{Target, TargetParseError};
#[allow(unused_imports)]
pub use tunnel::Tunnel;

/// `word` quoted for the remote POSIX shell, unless it needs no quoting.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_for_the_remote_shell() {
        assert_eq!(shell_quote("docker"), "docker");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
