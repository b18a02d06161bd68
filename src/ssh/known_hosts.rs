//! Host key checking: the one thing between the lab and a man in the middle.
//!
//! A lab hands the machines it reaches root-level Docker and TLS keys, so the
//! host key is checked on every connection, against both the user's
//! `~/.ssh/known_hosts` (machines they already `ssh` into) and the lab's own
//! file (keys recorded with `--accept-new-host-keys`, kept out of the user's
//! file so destroying the lab forgets them).
//!
//! libssh2's `KnownHosts` does the host-name matching, which is the subtle
//! part (hashed `|1|salt|hash` names, `[host]:port`, comma lists, IPv6).
//! The decision around it is ours, because libssh2's own check has two
//! quirks that would cry "changed key" at honest hosts:
//! - it ignores key types: a file that knows a host's RSA key reports a
//!   mismatch when the host offers its ed25519 key;
//! - `check_port` falls back from `[host]:port` to the bare `host`, so the
//!   key of the sshd on port 22 "mismatches" a VM forwarded on port 2222.
//!
//! So each line is matched on its own, by host name only (the exact
//! `host`/`[host]:port` name OpenSSH would use), and the key comparison is a
//! byte comparison here. Before the handshake, the key types known for the
//! host are put first in libssh2's algorithm list, as OpenSSH does, so a host
//! recorded by `ssh` is met with the same key type.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use ssh2::{CheckResult, KnownHostFileKind, MethodType, Session};

use super::error::{ChangedHostKey, SshError};
use super::target::Target;

/// Where host keys are looked up, and whether a new one may be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeys {
    /// The user's own file, `~/.ssh/known_hosts`: read, never written.
    pub user_known_hosts: PathBuf,
    /// The lab's file: read, and appended to when `accept_new` is set.
    pub lab_known_hosts: PathBuf,
    /// OpenSSH's `StrictHostKeyChecking=accept-new`: record a key never seen
    /// before. A key that differs from a recorded one is refused regardless.
    pub accept_new: bool,
}

impl HostKeys {
    /// The usual setup: the user's `~/.ssh/known_hosts` plus the lab's file.
    pub fn new(lab_known_hosts: PathBuf, accept_new: bool) -> Self {
        HostKeys {
            user_known_hosts: dirs::home_dir()
                .map(|home| home.join(".ssh").join("known_hosts"))
                .unwrap_or_default(),
            lab_known_hosts,
            accept_new,
        }
    }
}

/// A public host key in SSH wire format, as the server sends it and as
/// known_hosts stores it (base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    pub blob: Vec<u8>,
    /// The type named inside the blob: `ssh-ed25519`, `ssh-rsa`, ... (for
    /// RSA this stays `ssh-rsa` whichever signature algorithm was used).
    pub key_type: String,
}

impl HostKey {
    pub fn from_blob(blob: Vec<u8>) -> Option<HostKey> {
        let key_type = blob_key_type(&blob)?;
        Some(HostKey { blob, key_type })
    }

    /// OpenSSH's fingerprint form, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.blob)
    }
}

/// `SHA256:` and the unpadded base64 of the blob's SHA-256: what
/// `ssh-keygen -l -E sha256` and `ssh` show, so users can compare by eye.
pub fn fingerprint(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

/// The key blob starts with its type as an SSH string (u32 length, bytes).
fn blob_key_type(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4 + len)?;
    if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    String::from_utf8(name.to_vec()).ok()
}

/// One usable line of a known_hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub file: PathBuf,
    /// 1-based, for messages pointing at the line to delete.
    pub line: usize,
    pub revoked: bool,
    /// The line without its marker, for libssh2 to parse the host part.
    pub text: String,
    pub key: HostKey,
}

/// Reads the usable lines of one file. A missing file is an empty one (a
/// new lab has none yet); `@cert-authority` lines are skipped, as host
/// certificates are not supported.
pub(crate) fn read_entries(path: &Path) -> io::Result<Vec<Entry>> {
    if path.as_os_str().is_empty() {
        return Ok(Vec::new());
    }
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(parse_entries(path, &text))
}

fn parse_entries(path: &Path, text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (revoked, rest) = match line.split_once(char::is_whitespace) {
            Some(("@revoked", rest)) => (true, rest.trim_start()),
            Some((marker, _)) if marker.starts_with('@') => continue,
            _ => (false, line),
        };
        let mut fields = rest.split_whitespace();
        let (Some(_hosts), Some(_type), Some(key)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some(key) = STANDARD.decode(key).ok().and_then(HostKey::from_blob) else {
            continue;
        };
        entries.push(Entry {
            file: path.to_path_buf(),
            line: index + 1,
            revoked,
            text: rest.to_string(),
            key,
        });
    }
    entries
}

/// Keeps the entries whose host part names `name` (`host` or
/// `[host]:port`), letting libssh2 do the matching: hashed names need its
/// HMAC-SHA1, IPv6 needs its address comparison.
pub(crate) fn entries_for_host(
    session: &Session,
    entries: Vec<Entry>,
    name: &str,
) -> Result<Vec<Entry>, ssh2::Error> {
    // A key no file can contain: with it, libssh2 says Mismatch exactly when
    // the host part matched.
    const NO_KEY: &[u8] = b"goblog-lab: host name probe";
    let mut matching = Vec::new();
    for entry in entries {
        let mut one = session.known_hosts()?;
        if one
            .read_str(&entry.text, KnownHostFileKind::OpenSSH)
            .is_err()
        {
            // Lines libssh2 cannot read (wildcards, unknown key types) never
            // match, as if absent.
            continue;
        }
        if matches!(
            one.check(name, NO_KEY),
            CheckResult::Mismatch | CheckResult::Match
        ) {
            matching.push(entry);
        }
    }
    Ok(matching)
}

/// What the entries for a host say about the key it offered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Judgement<'a> {
    /// The line that lists the offered key.
    Known(&'a Entry),
    Unknown,
    /// The host is listed with other keys only: the first of the same type
    /// if there is one, else the first at all.
    Changed(&'a Entry),
    Revoked(&'a Entry),
}

pub(crate) fn judge<'a>(host_entries: &'a [Entry], offered: &HostKey) -> Judgement<'a> {
    if let Some(revoked) = host_entries
        .iter()
        .find(|e| e.revoked && e.key.blob == offered.blob)
    {
        return Judgement::Revoked(revoked);
    }
    let listed: Vec<&Entry> = host_entries.iter().filter(|e| !e.revoked).collect();
    if let Some(known) = listed.iter().find(|e| e.key.blob == offered.blob) {
        return Judgement::Known(known);
    }
    // A listed key of another type also counts as a change: the algorithm
    // preference asked for the listed types first, so a host that still had
    // one of them would have offered it.
    match listed
        .iter()
        .find(|e| e.key.key_type == offered.key_type)
        .or(listed.first())
    {
        Some(entry) => Judgement::Changed(entry),
        None => Judgement::Unknown,
    }
}

/// The default order when nothing is known about a host: OpenSSH's, so the
/// fingerprint shown for a new host is the one `ssh` would show. DSA is left
/// out on purpose.
const DEFAULT_ORDER: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
];

/// The host key algorithms that produce a key of `key_type`.
fn algorithms_for(key_type: &str) -> &[&'static str] {
    match key_type {
        "ssh-ed25519" => &["ssh-ed25519"],
        "ecdsa-sha2-nistp256" => &["ecdsa-sha2-nistp256"],
        "ecdsa-sha2-nistp384" => &["ecdsa-sha2-nistp384"],
        "ecdsa-sha2-nistp521" => &["ecdsa-sha2-nistp521"],
        "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
        _ => &[],
    }
}

/// The algorithm list for the handshake: the algorithms of the known key
/// types first, then the default order; only what this libssh2 supports.
pub(crate) fn algorithm_preference(known_types: &[&str], supported: &[&str]) -> String {
    let mut order: Vec<&str> = Vec::new();
    for alg in known_types
        .iter()
        .flat_map(|t| algorithms_for(t).iter().copied())
        .chain(DEFAULT_ORDER.iter().copied())
    {
        if supported.contains(&alg) && !order.contains(&alg) {
            order.push(alg);
        }
    }
    order.join(",")
}

/// Applies `algorithm_preference` to a session that has not shaken hands.
pub(crate) fn prefer_known_types(
    session: &Session,
    known_types: &[&str],
) -> Result<(), ssh2::Error> {
    let supported = session.supported_algs(MethodType::HostKey)?;
    let preference = algorithm_preference(known_types, &supported);
    if preference.is_empty() {
        return Ok(());
    }
    session.method_pref(MethodType::HostKey, &preference)
}

/// Checks the key the host offered in the handshake and, if it is new and
/// the caller allows it, records it in the lab's file. Returns the file and
/// line that vouch for the key.
pub(crate) fn verify(
    target: &Target,
    host_keys: &HostKeys,
    host_entries: &[Entry],
    offered: &HostKey,
) -> Result<(PathBuf, usize), SshError> {
    match judge(host_entries, offered) {
        Judgement::Known(entry) => Ok((entry.file.clone(), entry.line)),
        Judgement::Revoked(entry) => Err(SshError::RevokedHostKey {
            target: target.endpoint(),
            address: target.address(),
            fingerprint: offered.fingerprint(),
            file: entry.file.clone(),
            line: entry.line,
        }),
        Judgement::Changed(entry) => Err(SshError::ChangedHostKey(Box::new(ChangedHostKey {
            target: target.endpoint(),
            address: target.address(),
            known_hosts_name: target.known_hosts_name(),
            file: entry.file.clone(),
            line: entry.line,
            expected: entry.key.fingerprint(),
            expected_type: entry.key.key_type.clone(),
            offered: offered.fingerprint(),
            offered_type: offered.key_type.clone(),
        }))),
        Judgement::Unknown if host_keys.accept_new => {
            let file = &host_keys.lab_known_hosts;
            let line = record(file, &target.known_hosts_name(), offered).map_err(|source| {
                SshError::Io {
                    target: target.endpoint(),
                    what: format!("recording the host key in {}", file.display()),
                    source,
                }
            })?;
            Ok((file.clone(), line))
        }
        Judgement::Unknown => Err(SshError::UnknownHostKey {
            target: target.endpoint(),
            address: target.address(),
            key_type: offered.key_type.clone(),
            fingerprint: offered.fingerprint(),
        }),
    }
}

/// The line OpenSSH would write: plain (not hashed) so a user can read and
/// edit the lab's file.
pub(crate) fn known_hosts_line(name: &str, key: &HostKey) -> String {
    format!("{name} {} {}\n", key.key_type, STANDARD.encode(&key.blob))
}

/// Appends with one `write` on an `O_APPEND` file, so machines accepted in
/// parallel do not interleave their lines. The file holds what the lab
/// trusts, hence 0600 in a 0700 directory. Returns the line number written.
fn record(path: &Path, name: &str, key: &HostKey) -> io::Result<usize> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let needs_newline = match fs::read(path) {
        Ok(existing) => existing.last().is_some_and(|b| *b != b'\n'),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    let mut line = String::new();
    if needs_newline {
        line.push('\n');
    }
    line.push_str(&known_hosts_line(name, key));
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(line.as_bytes())?;
    let written = known_hosts_line(name, key);
    let text = fs::read_to_string(path)?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == written.trim_end())
        .last()
        .map_or(0, |(index, _)| index + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    // ssh-keygen -t ed25519, public part of a throwaway key.
    const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJ7JxcwE5WYyjP9VE0UB7pSBum1NCu+dFKjcfriaBpmr";

    fn key(b64: &str) -> HostKey {
        HostKey::from_blob(STANDARD.decode(b64).unwrap()).unwrap()
    }

    fn blob(key_type: &str, body: &[u8]) -> Vec<u8> {
        let mut blob = (key_type.len() as u32).to_be_bytes().to_vec();
        blob.extend_from_slice(key_type.as_bytes());
        blob.extend_from_slice(body);
        blob
    }

    #[test]
    fn fingerprint_is_openssh_form() {
        // Cross-checked with `ssh-keygen -lf` on the key above.
        assert_eq!(
            key(ED25519).fingerprint(),
            "SHA256:tx7rrJoL7qDj0YKzx2nTMk3zNEsYSZs9Ye6G4ahSsP0"
        );
        // Known-answer: SHA-256 of the empty input, no '=' padding.
        assert_eq!(
            fingerprint(b""),
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn key_type_comes_from_the_blob() {
        assert_eq!(key(ED25519).key_type, "ssh-ed25519");
        assert_eq!(
            HostKey::from_blob(blob("ssh-rsa", b"x")).unwrap().key_type,
            "ssh-rsa"
        );
        assert!(HostKey::from_blob(vec![0, 0, 0, 200, b'a']).is_none());
        assert!(HostKey::from_blob(vec![0, 0]).is_none());
        assert!(HostKey::from_blob(vec![0, 0, 0, 0]).is_none());
    }

    #[test]
    fn parses_lines_markers_and_skips_junk() {
        let text = format!(
            "# comment\n\n10.0.0.5 ssh-ed25519 {ED25519}\n\
             @revoked [10.0.0.6]:2222 ssh-ed25519 {ED25519} old\n\
             @cert-authority *.lab ssh-ed25519 {ED25519}\n\
             10.0.0.7 ssh-ed25519 not-base64!\n\
             10.0.0.8 ssh-ed25519\n\
             |1|abc=|def= ssh-ed25519 {ED25519}\n"
        );
        let entries = parse_entries(Path::new("/k"), &text);
        let summary: Vec<(usize, bool, &str)> = entries
            .iter()
            .map(|e| (e.line, e.revoked, e.text.split(' ').next().unwrap()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (3, false, "10.0.0.5"),
                (4, true, "[10.0.0.6]:2222"),
                (8, false, "|1|abc=|def=")
            ]
        );
    }

    fn entry(line: usize, revoked: bool, key: HostKey) -> Entry {
        Entry {
            file: "/k".into(),
            line,
            revoked,
            text: String::new(),
            key,
        }
    }

    #[test]
    fn judges_known_unknown_changed_revoked() {
        let offered = HostKey::from_blob(blob("ssh-ed25519", b"new")).unwrap();
        let old = HostKey::from_blob(blob("ssh-ed25519", b"old")).unwrap();
        let rsa = HostKey::from_blob(blob("ssh-rsa", b"rsa")).unwrap();

        assert_eq!(judge(&[], &offered), Judgement::Unknown);

        let known = [
            entry(1, false, old.clone()),
            entry(2, false, offered.clone()),
        ];
        assert!(matches!(judge(&known, &offered), Judgement::Known(e) if e.line == 2));

        // Same type first, even when another type is listed before it.
        let changed = [entry(1, false, rsa.clone()), entry(2, false, old.clone())];
        assert!(matches!(judge(&changed, &offered), Judgement::Changed(e) if e.line == 2));

        let other_type_only = [entry(5, false, rsa)];
        assert!(matches!(judge(&other_type_only, &offered), Judgement::Changed(e) if e.line == 5));

        let revoked = [
            entry(1, false, offered.clone()),
            entry(3, true, offered.clone()),
        ];
        assert!(matches!(judge(&revoked, &offered), Judgement::Revoked(e) if e.line == 3));

        // A revoked old key says nothing about the new one.
        let revoked_old = [entry(1, true, old)];
        assert_eq!(judge(&revoked_old, &offered), Judgement::Unknown);
    }

    #[test]
    fn algorithm_preference_puts_known_types_first() {
        let supported = [
            "ssh-ed25519",
            "ecdsa-sha2-nistp256",
            "rsa-sha2-512",
            "rsa-sha2-256",
            "ssh-rsa",
            "ssh-dss",
        ];
        assert_eq!(
            algorithm_preference(&[], &supported),
            "ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256,ssh-rsa"
        );
        assert_eq!(
            algorithm_preference(&["ssh-rsa", "ssh-rsa"], &supported),
            "rsa-sha2-512,rsa-sha2-256,ssh-rsa,ssh-ed25519,ecdsa-sha2-nistp256"
        );
        assert_eq!(
            algorithm_preference(&["ecdsa-sha2-nistp384"], &supported),
            "ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256,ssh-rsa"
        );
    }

    #[test]
    fn known_hosts_line_is_openssh_format() {
        assert_eq!(
            known_hosts_line("[10.0.0.5]:2222", &key(ED25519)),
            format!("[10.0.0.5]:2222 ssh-ed25519 {ED25519}\n")
        );
    }

    #[test]
    fn record_creates_private_file_and_appends() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("goblog-lab-kh-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("lab").join("known_hosts");
        assert_eq!(record(&path, "10.0.0.5", &key(ED25519)).unwrap(), 1);
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"# no newline")
            .unwrap();
        assert_eq!(record(&path, "[10.0.0.6]:2222", &key(ED25519)).unwrap(), 3);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!(
                "10.0.0.5 ssh-ed25519 {ED25519}\n# no newline\n[10.0.0.6]:2222 ssh-ed25519 {ED25519}\n"
            )
        );
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("lab")), 0o700);
        fs::remove_dir_all(&dir).unwrap();
    }
}
