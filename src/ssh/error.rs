//! What can go wrong talking to a lab machine, one line each.
//!
//! The CLI prints these as the last line a user sees, usually about one of
//! several machines, so every message names `user@host:port` and ends with
//! what to do about it. Variants stay specific (no catch-all string) so the
//! callers can react to, say, a timeout differently from a refused key.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// No TCP connection: the machine is off, unroutable, or sshd is not
    /// listening.
    #[error("cannot reach {target}: {source} (is the host down or unreachable, or sshd not running on that port?)")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },

    /// A deadline passed: connecting, the SSH handshake, or a command.
    #[error("{what} on {target} did not finish within {}: the host may be overloaded or the network slow; retry, or look at the host", human(.after))]
    Timeout {
        target: String,
        what: String,
        after: Duration,
    },

    /// The host offered a key neither known_hosts file lists.
    #[error("host key of {address} is not known ({fingerprint}, {key_type}): check it (ssh-keygen -lf /etc/ssh/ssh_host_{short}_key.pub on the host), then pass --accept-new-host-keys to record it in the lab's known_hosts", short = short_type(.key_type))]
    UnknownHostKey {
        target: String,
        address: String,
        key_type: String,
        fingerprint: String,
    },

    /// A known_hosts file lists this host with another key: reinstalled
    /// machine, recycled address, or someone in the middle. Never accepted
    /// automatically. Boxed: it carries the most, and every `Result` pays
    /// for the largest variant.
    #[error(transparent)]
    ChangedHostKey(Box<ChangedHostKey>),

    /// The offered key is marked `@revoked` in a known_hosts file.
    #[error("host key of {address} ({fingerprint}) is marked @revoked in {file}:{line}: refusing to connect; replace the host's key")]
    RevokedHostKey {
        target: String,
        address: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
    },

    /// Every identity was refused by the server.
    #[error("{target} refused every key tried ({tried}): add one of them to ~{user}/.ssh/authorized_keys on the host, load the right one with ssh-add, or pass --ssh-key")]
    AuthFailed {
        target: String,
        user: String,
        tried: String,
    },

    /// The only usable key is encrypted and no agent holds it; libssh2 has
    /// no way to ask for the passphrase.
    #[error("{key} is protected by a passphrase and no ssh-agent holds it (connecting to {target}): run `ssh-add {key}` first, then retry", key = .key.display())]
    KeyNeedsPassphrase { target: String, key: PathBuf },

    /// A non-root login cannot become root without a password.
    #[error("{user} on {host} needs passwordless sudo ({detail}): log in as root, or allow it with a NOPASSWD line in /etc/sudoers.d")]
    NoSudo {
        target: String,
        user: String,
        host: String,
        detail: String,
    },

    /// A remote command exited non-zero.
    #[error("{what} failed on {target} (exit status {status}): {message}")]
    Command {
        target: String,
        what: String,
        status: i32,
        message: String,
    },

    /// A local file or socket: the key file, the lab's known_hosts, the
    /// tunnel's listener.
    #[error("{what} (for {target}): {source}")]
    Io {
        target: String,
        what: String,
        #[source]
        source: io::Error,
    },

    /// libssh2 reported a failure that is none of the above: the port does
    /// not speak SSH, the server closed the connection, a channel was
    /// refused.
    #[error("SSH error with {target} while {what}: {detail} (is it an SSH server, and does it allow this?)")]
    Protocol {
        target: String,
        what: String,
        /// libssh2's own message, e.g. "Channel open failure (connect failed)".
        detail: String,
    },
}

/// The details of `SshError::ChangedHostKey`.
#[derive(Debug, thiserror::Error)]
#[error("host key of {address} has CHANGED: {file}:{line} expects {expected} ({expected_type}) but the host offered {offered} ({offered_type}); this may be an attack. If the machine was reinstalled, remove that line (ssh-keygen -R '{known_hosts_name}' -f {file}) and connect again", file = .file.display())]
pub struct ChangedHostKey {
    pub target: String,
    pub address: String,
    pub known_hosts_name: String,
    pub file: PathBuf,
    pub line: usize,
    pub expected: String,
    pub expected_type: String,
    pub offered: String,
    pub offered_type: String,
}

impl SshError {
    /// The `user@host:port` the error is about.
    pub fn target(&self) -> &str {
        match self {
            SshError::Connect { target, .. }
            | SshError::Timeout { target, .. }
            | SshError::UnknownHostKey { target, .. }
            | SshError::RevokedHostKey { target, .. }
            | SshError::AuthFailed { target, .. }
            | SshError::KeyNeedsPassphrase { target, .. }
            | SshError::NoSudo { target, .. }
            | SshError::Command { target, .. }
            | SshError::Io { target, .. }
            | SshError::Protocol { target, .. } => target,
            SshError::ChangedHostKey(change) => &change.target,
        }
    }

    /// Sorts a libssh2 failure: its timeout code becomes `Timeout` (it is
    /// what `Session::set_timeout` produces), the rest `Protocol`.
    pub(crate) fn from_ssh2(target: &str, what: &str, after: Duration, error: ssh2::Error) -> Self {
        if error.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) {
            SshError::Timeout {
                target: target.to_string(),
                what: what.to_string(),
                after,
            }
        } else {
            SshError::Protocol {
                target: target.to_string(),
                what: what.to_string(),
                detail: error.message().to_string(),
            }
        }
    }

    /// The same for an `io::Error` that came out of a channel read or write,
    /// where ssh2 has already turned its error into an io one.
    pub(crate) fn from_channel_io(
        target: &str,
        what: &str,
        after: Duration,
        error: io::Error,
    ) -> Self {
        match error.kind() {
            io::ErrorKind::TimedOut => SshError::Timeout {
                target: target.to_string(),
                what: what.to_string(),
                after,
            },
            _ => SshError::Protocol {
                target: target.to_string(),
                what: what.to_string(),
                detail: error.to_string(),
            },
        }
    }
}

/// libssh2's codes, which ssh2 does not re-export under a name.
pub(crate) const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
pub(crate) const LIBSSH2_ERROR_EAGAIN: i32 = -37;
pub(crate) const LIBSSH2_ERROR_FILE: i32 = -16;

fn human(duration: &Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs >= 1.0 && duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{secs:.1}s")
    }
}

/// `ssh-ed25519` → `ed25519`, the name the host's key file carries.
fn short_type(key_type: &str) -> &str {
    match key_type {
        "ssh-ed25519" => "ed25519",
        "ssh-rsa" => "rsa",
        "ssh-dss" => "dsa",
        t if t.starts_with("ecdsa-") => "ecdsa",
        t => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_name_the_target() {
        let errors = [
            SshError::Connect {
                target: "admin@10.0.0.5:22".into(),
                source: io::Error::from(io::ErrorKind::ConnectionRefused),
            },
            SshError::Timeout {
                target: "admin@10.0.0.5:22".into(),
                what: "`docker info`".into(),
                after: Duration::from_secs(30),
            },
            SshError::UnknownHostKey {
                target: "admin@10.0.0.5:22".into(),
                address: "10.0.0.5:22".into(),
                key_type: "ssh-ed25519".into(),
                fingerprint: "SHA256:abc".into(),
            },
            SshError::KeyNeedsPassphrase {
                target: "admin@10.0.0.5:22".into(),
                key: "/home/me/.ssh/id_ed25519".into(),
            },
        ];
        for error in errors {
            let message = error.to_string();
            assert!(!message.contains('\n'), "{message}");
            assert!(message.contains("10.0.0.5:22"), "{message}");
        }
    }

    #[test]
    fn unknown_host_key_says_what_to_do() {
        let message = SshError::UnknownHostKey {
            target: "root@10.0.0.5:22".into(),
            address: "10.0.0.5:22".into(),
            key_type: "ssh-ed25519".into(),
            fingerprint: "SHA256:abc".into(),
        }
        .to_string();
        assert!(message.starts_with("host key of 10.0.0.5:22 is not known (SHA256:abc"));
        assert!(message.contains("ssh_host_ed25519_key.pub"));
        assert!(message.contains("--accept-new-host-keys"));
    }

    #[test]
    fn timeouts_read_naturally() {
        assert_eq!(human(&Duration::from_secs(30)), "30s");
        assert_eq!(human(&Duration::from_millis(1500)), "1.5s");
    }
}
