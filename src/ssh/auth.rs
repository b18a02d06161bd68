//! Logging in: which identity to offer, in which order, and why it failed.
//!
//! The order is OpenSSH's habit: the agent first (it holds unlocked keys,
//! including passphrase-protected ones), then `--ssh-key`, then the default
//! `~/.ssh/id_ed25519` and `~/.ssh/id_rsa`. libssh2 cannot prompt for a
//! passphrase, so encrypted key files are recognised up front and turned into
//! an `ssh-add` hint instead of an opaque "unable to extract public key".
//!
//! The search runs once, in `SshClient::connect`; the identity that worked is
//! remembered so each later session logs in with one attempt, which also
//! keeps clear of sshd's MaxAuthTries.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ssh2::{ErrorCode, Session};

use super::error::{SshError, LIBSSH2_ERROR_FILE, LIBSSH2_ERROR_TIMEOUT};
use super::session::Deadline;
use super::target::Target;

/// The identity the user named: `--ssh-key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A private key to try after the agent and before the defaults.
    pub key: Option<PathBuf>,
}

/// The identity that logged in, reused for every later session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthMethod {
    /// A key held by ssh-agent, found again by its public blob.
    Agent { blob: Vec<u8>, comment: String },
    /// An unencrypted private key file.
    KeyFile(PathBuf),
}

/// libssh2's codes for "the server said no" (as opposed to a broken
/// connection or an unreadable file).
const LIBSSH2_ERROR_AUTHENTICATION_FAILED: i32 = -18;
const LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED: i32 = -19;

/// Tries each identity in order until one is accepted.
pub(crate) fn first_login(
    session: &Session,
    target: &Target,
    credentials: &Credentials,
    deadline: &Deadline,
) -> Result<AuthMethod, SshError> {
    let user = target.user.as_str();
    let mut tried: Vec<String> = Vec::new();

    if agent_socket().is_some() {
        if let Some(method) = try_agent(session, target, user, deadline, &mut tried)? {
            return Ok(method);
        }
    }

    let mut encrypted: Vec<PathBuf> = Vec::new();
    for (path, explicit) in key_candidates(credentials) {
        let contents = match fs::read(&path) {
            Ok(contents) => contents,
            Err(e) if !explicit && e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                if explicit {
                    return Err(SshError::Io {
                        target: target.endpoint(),
                        what: format!("reading the --ssh-key file {}", path.display()),
                        source,
                    });
                }
                tried.push(format!("{} (unreadable: {source})", path.display()));
                continue;
            }
        };
        if key_needs_passphrase(&contents) {
            tried.push(format!("{} (passphrase-protected)", path.display()));
            encrypted.push(path);
            continue;
        }
        deadline.arm(session, target, "logging in")?;
        match session.userauth_pubkey_file(user, None, &path, None) {
            Ok(()) if session.authenticated() => return Ok(AuthMethod::KeyFile(path)),
            Ok(()) => tried.push(path.display().to_string()),
            Err(e) => tried.push(describe_refusal(
                target,
                deadline,
                path.display().to_string(),
                e,
            )?),
        }
    }

    if let Some(key) = encrypted.into_iter().next() {
        return Err(SshError::KeyNeedsPassphrase {
            target: target.endpoint(),
            key,
        });
    }
    if tried.is_empty() {
        tried.push(
            "none: no ssh-agent (SSH_AUTH_SOCK is unset), no --ssh-key, no ~/.ssh/id_ed25519 or ~/.ssh/id_rsa"
                .to_string(),
        );
    }
    Err(SshError::AuthFailed {
        target: target.endpoint(),
        user: user.to_string(),
        tried: tried.join(", "),
    })
}

/// Logs in a later session with the identity `first_login` found.
pub(crate) fn login_again(
    session: &Session,
    target: &Target,
    method: &AuthMethod,
    deadline: &Deadline,
) -> Result<(), SshError> {
    let user = target.user.as_str();
    deadline.arm(session, target, "logging in")?;
    let (result, what) = match method {
        AuthMethod::KeyFile(path) => (
            session.userauth_pubkey_file(user, None, path, None),
            path.display().to_string(),
        ),
        AuthMethod::Agent { blob, comment } => {
            let what = format!("ssh-agent key {comment}");
            let found = session.agent().and_then(|mut agent| {
                agent.connect()?;
                agent.list_identities()?;
                let identity = agent.identities()?.into_iter().find(|id| id.blob() == blob);
                Ok((agent, identity))
            });
            match found {
                Ok((agent, Some(identity))) => (agent.userauth(user, &identity), what),
                Ok((_, None)) => {
                    return Err(SshError::AuthFailed {
                        target: target.endpoint(),
                        user: user.to_string(),
                        tried: format!("{what} (no longer in the agent)"),
                    })
                }
                Err(e) => (Err(e), what),
            }
        }
    };
    match result {
        Ok(()) if session.authenticated() => Ok(()),
        Ok(()) => Err(SshError::AuthFailed {
            target: target.endpoint(),
            user: user.to_string(),
            tried: what,
        }),
        Err(e) => {
            let tried = describe_refusal(target, deadline, what, e)?;
            Err(SshError::AuthFailed {
                target: target.endpoint(),
                user: user.to_string(),
                tried,
            })
        }
    }
}

fn agent_socket() -> Option<std::ffi::OsString> {
    std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty())
}

/// Offers each agent identity in turn. An agent that cannot be reached is
/// noted and skipped: the key files may still work.
fn try_agent(
    session: &Session,
    target: &Target,
    user: &str,
    deadline: &Deadline,
    tried: &mut Vec<String>,
) -> Result<Option<AuthMethod>, SshError> {
    let agent = session.agent().and_then(|mut agent| {
        agent.connect()?;
        agent.list_identities()?;
        let identities = agent.identities()?;
        Ok((agent, identities))
    });
    let (agent, identities) = match agent {
        Ok(found) => found,
        Err(e) => {
            tried.push(format!("ssh-agent (unreachable: {})", e.message()));
            return Ok(None);
        }
    };
    if identities.is_empty() {
        tried.push("ssh-agent (holds no keys)".to_string());
        return Ok(None);
    }
    for identity in identities {
        deadline.arm(session, target, "logging in")?;
        let label = format!("ssh-agent key {}", identity.comment());
        match agent.userauth(user, &identity) {
            Ok(()) if session.authenticated() => {
                return Ok(Some(AuthMethod::Agent {
                    blob: identity.blob().to_vec(),
                    comment: identity.comment().to_string(),
                }))
            }
            Ok(()) => tried.push(label),
            Err(e) => tried.push(describe_refusal(target, deadline, label, e)?),
        }
    }
    Ok(None)
}

/// The explicit key first, then the defaults; `true` marks the explicit one,
/// whose absence is an error rather than a skip.
fn key_candidates(credentials: &Credentials) -> Vec<(PathBuf, bool)> {
    let mut candidates: Vec<(PathBuf, bool)> = Vec::new();
    if let Some(key) = &credentials.key {
        candidates.push((key.clone(), true));
    }
    if let Some(home) = dirs::home_dir() {
        for name in ["id_ed25519", "id_rsa"] {
            let path = home.join(".ssh").join(name);
            if !candidates.iter().any(|(p, _)| same_file(p, &path)) {
                candidates.push((path, false));
            }
        }
    }
    candidates
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b)
}

/// Turns a refused attempt into its entry in the "keys tried" list, or into
/// an error when it was no refusal at all (the deadline passed).
fn describe_refusal(
    target: &Target,
    deadline: &Deadline,
    label: String,
    error: ssh2::Error,
) -> Result<String, SshError> {
    Ok(match error.code() {
        ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) => {
            return Err(deadline.expired(target, "logging in"))
        }
        ErrorCode::Session(LIBSSH2_ERROR_AUTHENTICATION_FAILED)
        | ErrorCode::Session(LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED) => label,
        ErrorCode::Session(LIBSSH2_ERROR_FILE) => {
            format!("{label} (libssh2 cannot load it: {})", error.message())
        }
        _ => format!("{label} ({})", error.message()),
    })
}

/// Whether a private key file is encrypted, without decrypting it.
///
/// OpenSSH's own format (`-----BEGIN OPENSSH PRIVATE KEY-----`) names its
/// cipher right after the `openssh-key-v1` magic, "none" when unprotected.
/// The older PEM formats say `ENCRYPTED` in their armour: `Proc-Type:
/// 4,ENCRYPTED` (PKCS#1) or `BEGIN ENCRYPTED PRIVATE KEY` (PKCS#8).
pub fn key_needs_passphrase(contents: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(contents) else {
        return false;
    };
    const BEGIN_OPENSSH: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
    const END_OPENSSH: &str = "-----END OPENSSH PRIVATE KEY-----";
    if let Some(start) = text.find(BEGIN_OPENSSH) {
        let body = &text[start + BEGIN_OPENSSH.len()..];
        let body = body.find(END_OPENSSH).map_or(body, |end| &body[..end]);
        let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let Ok(bytes) = STANDARD.decode(base64) else {
            return false;
        };
        return openssh_cipher(&bytes).is_some_and(|cipher| cipher != b"none");
    }
    text.lines().any(|line| {
        let line = line.trim();
        (line.starts_with("-----BEGIN") || line.starts_with("Proc-Type:"))
            && line.contains("ENCRYPTED")
    })
}

/// The cipher name of an `openssh-key-v1` blob: magic, NUL, then an SSH
/// string (u32 big-endian length, bytes).
fn openssh_cipher(bytes: &[u8]) -> Option<&[u8]> {
    const MAGIC: &[u8] = b"openssh-key-v1\0";
    let rest = bytes.strip_prefix(MAGIC)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    rest.get(4..4 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssh_armour(cipher: &str) -> Vec<u8> {
        let mut blob = b"openssh-key-v1\0".to_vec();
        blob.extend_from_slice(&(cipher.len() as u32).to_be_bytes());
        blob.extend_from_slice(cipher.as_bytes());
        blob.extend_from_slice(&[0, 0, 0, 4]);
        blob.extend_from_slice(b"none");
        blob.extend_from_slice(&[0; 40]);
        let encoded = STANDARD.encode(&blob);
        // Wrapped at 70 columns like ssh-keygen does, so the parser must
        // join lines.
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(70)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            lines.join("\n")
        )
        .into_bytes()
    }

    #[test]
    fn openssh_format_reads_the_cipher() {
        assert!(!key_needs_passphrase(&openssh_armour("none")));
        assert!(key_needs_passphrase(&openssh_armour("aes256-ctr")));
        assert!(key_needs_passphrase(&openssh_armour(
            "chacha20-poly1305@openssh.com"
        )));
    }

    #[test]
    fn pem_formats_read_the_armour() {
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nMIIE\n-----END RSA PRIVATE KEY-----\n";
        let pkcs8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let plain = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAENCRYPTEDxx\n-----END RSA PRIVATE KEY-----\n";
        assert!(key_needs_passphrase(pkcs1.as_bytes()));
        assert!(key_needs_passphrase(pkcs8.as_bytes()));
        // "ENCRYPTED" inside the base64 body is data, not a marker.
        assert!(!key_needs_passphrase(plain.as_bytes()));
    }

    #[test]
    fn garbage_is_not_encrypted() {
        assert!(!key_needs_passphrase(b""));
        assert!(!key_needs_passphrase(&[0xff, 0xfe, 0x00]));
        assert!(!key_needs_passphrase(
            b"-----BEGIN OPENSSH PRIVATE KEY-----\n!!!\n-----END OPENSSH PRIVATE KEY-----\n"
        ));
        assert!(!key_needs_passphrase(
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
        ));
    }

    #[test]
    fn explicit_key_comes_first_and_is_not_repeated() {
        let home = dirs::home_dir().unwrap();
        let default = home.join(".ssh").join("id_ed25519");
        let explicit = Credentials {
            key: Some(default.clone()),
        };
        let candidates = key_candidates(&explicit);
        assert_eq!(candidates[0], (default.clone(), true));
        assert_eq!(candidates.iter().filter(|(p, _)| *p == default).count(), 1);
        assert_eq!(
            candidates.last().unwrap().0,
            home.join(".ssh").join("id_rsa")
        );
    }
}
