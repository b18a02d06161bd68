//! The client: one verified login, then a fresh SSH connection per operation.
//!
//! libssh2 sessions are blocking and not safe to share between threads doing
//! I/O, so instead of multiplexing channels over one connection, each `run`
//! (and each tunnelled TCP connection) gets its own session on a blocking
//! thread. That costs a handshake (a few milliseconds on a LAN) and buys
//! plain parallelism: clones of one `SshClient` run side by side.
//!
//! Every new connection checks the host key again; after `connect` it must
//! be byte-for-byte the key verified then.
//!
//! Data moves with the session in non-blocking mode and a short poll loop
//! (`Pump`): stdin, stdout and stderr (or both directions of a tunnel)
//! progress independently, so neither side can fill a window and wait
//! forever for the other. libssh2 offers no readiness handle, hence a sleep
//! that backs off from 50 µs to 5 ms while nothing moves.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ssh2::{Channel, ErrorCode, Session};

use super::auth::{self, AuthMethod, Credentials};
use super::error::{ChangedHostKey, SshError, LIBSSH2_ERROR_EAGAIN};
use super::known_hosts::{self, HostKey, HostKeys};
use super::target::Target;
use super::tunnel::{self, Tunnel};

/// libssh2 sends a keepalive after this many idle seconds, so NAT boxes and
/// firewalls keep long silent commands (an image pull) connected.
const KEEPALIVE_SECS: u32 = 15;

/// How long `check_root` gives `sudo -n true`.
const SUDO_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// A verified way into one machine. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct SshClient {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    /// The key verified by `connect`, required of every later connection.
    host_key: HostKey,
    /// Where that key is recorded, for the message if it ever changes.
    host_key_origin: (std::path::PathBuf, usize),
    auth: AuthMethod,
    /// Bounds connecting, the handshake and logging in of later sessions.
    connect_timeout: Duration,
    /// Logged-in sessions whose last command finished cleanly. A command
    /// takes one when there is one: a new connection (TCP, handshake, key
    /// exchange, login) costs about half a second against OpenSSH here, and
    /// provisioning a host runs a dozen commands one after another.
    /// Concurrent commands still each get a session of their own.
    idle: std::sync::Mutex<Vec<Session>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for session in self.idle.get_mut().unwrap().drain(..) {
            close(session);
        }
    }
}

impl std::fmt::Debug for SshClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshClient")
            .field("target", &self.inner.target)
            .field("host_key", &self.inner.host_key.fingerprint())
            .finish()
    }
}

/// What a remote command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit status; 128 + the signal number if a signal ended it (as a
    /// shell reports it), 255 for a signal with no known number.
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// `user@host:port` it ran on, for `check`'s message.
    pub target: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Passes a successful output through; turns a non-zero status into
    /// `SshError::Command` carrying `what` and the first line the command
    /// printed to stderr (or to stdout if stderr was empty).
    pub fn check(self, what: &str) -> Result<Output, SshError> {
        if self.success() {
            return Ok(self);
        }
        let message = first_line(&self.stderr)
            .or_else(|| first_line(&self.stdout))
            .unwrap_or_else(|| "it printed nothing".to_string());
        Err(SshError::Command {
            target: self.target.clone(),
            what: what.to_string(),
            status: self.status,
            message,
        })
    }
}

fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(truncate(line, 200))
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A command as error messages name it: its first line, shortened.
fn describe(command: &str) -> String {
    let first = command.lines().next().unwrap_or("");
    let more = if command.lines().nth(1).is_some() {
        " …"
    } else {
        ""
    };
    format!("`{}{more}`", truncate(first, 80))
}

/// Single-quotes for a POSIX shell.
pub(crate) fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The command `run_root` sends: unchanged for root, otherwise through
/// `sudo -n sh -c`, so a compound command (`a && b`, redirections) runs as
/// root as a whole, not just its first word; `-n` fails instead of hanging
/// on a password prompt nobody can answer.
pub(crate) fn as_root(user: &str, command: &str) -> String {
    if user == "root" {
        command.to_string()
    } else {
        format!("sudo -n sh -c {}", sh_quote(command))
    }
}

/// The shell script `upload` runs as root, with the contents on stdin.
pub(crate) fn upload_script(path: &str, mode: u32) -> String {
    let tmp = format!("{path}.goblog-lab.tmp");
    let dir = match path.rsplit_once('/') {
        Some(("", _)) => "/",
        Some((dir, _)) => dir,
        None => ".",
    };
    // umask 022 while creating the parents (0755), 077 while the temporary
    // file exists, so nobody reads a secret between `cat` and `chmod`. The
    // trap removes a half-written temporary file if anything fails; after
    // the `mv` it has nothing left to remove.
    format!(
        "set -e; umask 022; mkdir -p -- {dir}; umask 077; trap {cleanup} EXIT; rm -f -- {tmp}; cat > {tmp}; chmod {mode:o} -- {tmp}; mv -f -- {tmp} {path}",
        dir = sh_quote(dir),
        cleanup = sh_quote(&format!("rm -f -- {}", sh_quote(&tmp))),
        tmp = sh_quote(&tmp),
        mode = mode & 0o7777,
        path = sh_quote(path),
    )
}

/// A point in time every blocking libssh2 call must finish by.
pub(crate) struct Deadline {
    end: Instant,
    total: Duration,
}

impl Deadline {
    pub(crate) fn after(total: Duration) -> Self {
        Deadline {
            end: Instant::now() + total,
            total,
        }
    }

    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.end
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }

    /// Sets libssh2's per-call timeout to what is left, so the next blocking
    /// call cannot outlive the deadline (libssh2 reads 0 as "no timeout",
    /// hence at least 1 ms).
    pub(crate) fn arm(
        &self,
        session: &Session,
        target: &Target,
        what: &str,
    ) -> Result<(), SshError> {
        let left = self.remaining().ok_or_else(|| self.expired(target, what))?;
        session.set_timeout(left.as_millis().clamp(1, u32::MAX as u128) as u32);
        Ok(())
    }

    pub(crate) fn expired(&self, target: &Target, what: &str) -> SshError {
        SshError::Timeout {
            target: target.endpoint(),
            what: what.to_string(),
            after: self.total,
        }
    }
}

/// Sleeps while a non-blocking loop makes no progress, longer each time.
pub(crate) struct Backoff {
    sleep: Duration,
    idle_since: Option<Instant>,
}

impl Backoff {
    const MIN: Duration = Duration::from_micros(50);
    const MAX: Duration = Duration::from_millis(5);

    pub(crate) fn new() -> Self {
        Backoff {
            sleep: Self::MIN,
            idle_since: None,
        }
    }

    pub(crate) fn progressed(&mut self) {
        self.sleep = Self::MIN;
        self.idle_since = None;
    }

    /// Waits a little. After a second of silence it also lets libssh2 send a
    /// keepalive if one is due: only then, because a keepalive that gets
    /// half-written into a full socket would have to be finished before any
    /// channel data could follow, and a silent connection has an empty
    /// socket buffer.
    pub(crate) fn idle(&mut self, session: &Session) {
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= Duration::from_secs(1) {
            let _ = session.keepalive_send();
        }
        thread::sleep(self.sleep);
        self.sleep = (self.sleep * 2).min(Self::MAX);
    }
}

pub(crate) fn would_block(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn ssh2_would_block(error: &ssh2::Error) -> bool {
    error.code() == ErrorCode::Session(LIBSSH2_ERROR_EAGAIN)
}

/// Runs blocking work on tokio's blocking pool, passing panics on.
/// SSH work running on the blocking pool, in this process. A future
/// dropped on Ctrl-C does not stop its blocking half, which may still
/// write a file on a host a moment later; a rollback waits for these first
/// ([`settle`]), or it could undo a change before the change lands.
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct InFlight;

impl InFlight {
    fn start() -> Self {
        IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Waits until no SSH command, upload or connection of this process is
/// still running, or `timeout` passes (each is bounded by its own timeout).
/// Returns whether all finished.
pub async fn settle(timeout: Duration) -> bool {
    let idle = || async {
        Ok::<_, ()>(match IN_FLIGHT.load(std::sync::atomic::Ordering::SeqCst) {
            0 => std::ops::ControlFlow::Break(()),
            _ => std::ops::ControlFlow::Continue(()),
        })
    };
    crate::retry::until_deadline(timeout, Duration::from_millis(20), idle, |()| ())
        .await
        .is_ok()
}

pub(crate) async fn blocking<T, F>(work: F) -> Result<T, SshError>
where
    F: FnOnce() -> Result<T, SshError> + Send + 'static,
    T: Send + 'static,
{
    let in_flight = InFlight::start();
    let work = move || {
        let _in_flight = in_flight;
        work()
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels blocking tasks; nobody is
        // left to read an error.
        Err(e) => panic!("SSH task cancelled: {e}"),
    }
}

/// TCP to the first address that answers within the deadline.
fn tcp_connect(target: &Target, deadline: &Deadline) -> Result<TcpStream, SshError> {
    let connect_error = |source| SshError::Connect {
        target: target.endpoint(),
        source,
    };
    let addresses: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(connect_error)?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for address in addresses {
        let Some(left) = deadline.remaining() else {
            last = io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {:?}", deadline.total),
            );
            break;
        };
        match TcpStream::connect_timeout(&address, left) {
            Ok(stream) => {
                // Small writes (a tunnelled HTTP request) should not wait
                // for Nagle.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(connect_error(last))
}

fn new_session(target: &Target) -> Result<Session, SshError> {
    Session::new().map_err(|e| SshError::Protocol {
        target: target.endpoint(),
        what: "starting libssh2".to_string(),
        detail: e.message().to_string(),
    })
}

fn protocol<'a>(target: &'a Target, what: &str) -> impl Fn(ssh2::Error) -> SshError + 'a {
    let what = what.to_string();
    move |e| SshError::Protocol {
        target: target.endpoint(),
        what: what.clone(),
        detail: e.message().to_string(),
    }
}

/// The handshake, then the key the host offered in it.
fn shake_hands(
    session: &mut Session,
    tcp: TcpStream,
    target: &Target,
    deadline: &Deadline,
) -> Result<HostKey, SshError> {
    session.set_tcp_stream(tcp);
    deadline.arm(session, target, "the SSH handshake")?;
    session.handshake().map_err(|e| {
        SshError::from_ssh2(&target.endpoint(), "the SSH handshake", deadline.total, e)
    })?;
    session.set_keepalive(true, KEEPALIVE_SECS);
    let (blob, _) = session.host_key().ok_or_else(|| SshError::Protocol {
        target: target.endpoint(),
        what: "reading the host key".to_string(),
        detail: "the handshake produced no host key".to_string(),
    })?;
    HostKey::from_blob(blob.to_vec()).ok_or_else(|| SshError::Protocol {
        target: target.endpoint(),
        what: "reading the host key".to_string(),
        detail: "the host key blob is malformed".to_string(),
    })
}

/// Says goodbye properly (sshd logs an error otherwise), without letting a
/// dead peer hold us up.
fn close(session: Session) {
    session.set_blocking(true);
    session.set_timeout(1000);
    let _ = session.disconnect(None, "goblog-lab done", None);
}

impl SshClient {
    /// Connects once to verify: TCP (with timeout), handshake, host key
    /// check, authentication. Keeps what it learned (which key/agent worked)
    /// so later operations do not repeat the search.
    pub async fn connect(
        target: Target,
        credentials: Credentials,
        host_keys: HostKeys,
        timeout: Duration,
    ) -> Result<SshClient, SshError> {
        blocking(move || Self::connect_blocking(target, credentials, host_keys, timeout)).await
    }

    fn connect_blocking(
        target: Target,
        credentials: Credentials,
        host_keys: HostKeys,
        timeout: Duration,
    ) -> Result<SshClient, SshError> {
        let deadline = Deadline::after(timeout);
        let tcp = tcp_connect(&target, &deadline)?;
        let mut session = new_session(&target)?;

        let mut entries = Vec::new();
        for file in [&host_keys.user_known_hosts, &host_keys.lab_known_hosts] {
            entries.extend(
                known_hosts::read_entries(file).map_err(|source| SshError::Io {
                    target: target.endpoint(),
                    what: format!("reading {}", file.display()),
                    source,
                })?,
            );
        }
        let host_entries =
            known_hosts::entries_for_host(&session, entries, &target.known_hosts_name())
                .map_err(protocol(&target, "reading known_hosts"))?;
        let mut known_types: Vec<&str> = Vec::new();
        for entry in host_entries.iter().filter(|e| !e.revoked) {
            if !known_types.contains(&entry.key.key_type.as_str()) {
                known_types.push(&entry.key.key_type);
            }
        }
        known_hosts::prefer_known_types(&session, &known_types)
            .map_err(protocol(&target, "choosing host key algorithms"))?;

        let offered = shake_hands(&mut session, tcp, &target, &deadline)?;
        let origin = known_hosts::verify(&target, &host_keys, &host_entries, &offered)?;
        let auth = auth::first_login(&session, &target, &credentials, &deadline)?;
        let idle = std::sync::Mutex::new(vec![session]);
        Ok(SshClient {
            inner: Arc::new(Inner {
                target,
                host_key: offered,
                host_key_origin: origin,
                auth,
                connect_timeout: timeout,
                idle,
            }),
        })
    }

    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// What `connect` was given; also bounds each later session's setup.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.inner.connect_timeout
    }

    /// The SHA256 fingerprint of the host key verified by `connect`.
    pub fn host_key_fingerprint(&self) -> String {
        self.inner.host_key.fingerprint()
    }

    /// A new logged-in session: same host key as at `connect`, same
    /// identity.
    pub(crate) fn open_session(&self) -> Result<Session, SshError> {
        let inner = &*self.inner;
        let target = &inner.target;
        let deadline = Deadline::after(inner.connect_timeout);
        let tcp = tcp_connect(target, &deadline)?;
        let mut session = new_session(target)?;
        known_hosts::prefer_known_types(&session, &[inner.host_key.key_type.as_str()])
            .map_err(protocol(target, "choosing host key algorithms"))?;
        let offered = shake_hands(&mut session, tcp, target, &deadline)?;
        if offered != inner.host_key {
            let (file, line) = inner.host_key_origin.clone();
            return Err(SshError::ChangedHostKey(Box::new(ChangedHostKey {
                target: target.endpoint(),
                address: target.address(),
                known_hosts_name: target.known_hosts_name(),
                file,
                line,
                expected: inner.host_key.fingerprint(),
                expected_type: inner.host_key.key_type.clone(),
                offered: offered.fingerprint(),
                offered_type: offered.key_type,
            })));
        }
        auth::login_again(&session, target, &inner.auth, &deadline)?;
        Ok(session)
    }

    /// Runs `command` through the remote shell. stdin bytes are written then
    /// EOF'd (EOF right away without stdin, so nothing waits for input). One
    /// new ssh session per call (so concurrent calls on clones run in
    /// parallel), in spawn_blocking. `timeout` bounds the command from the
    /// moment the session is up; connecting is bounded by `connect`'s.
    pub async fn run(
        &self,
        command: &str,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        let client = self.clone();
        let command = command.to_string();
        blocking(move || {
            client.run_blocking(&command, stdin.as_deref().unwrap_or_default(), timeout)
        })
        .await
    }

    /// Same, but as root: through `sudo -n sh -c` unless the user is root.
    /// Use for everything that changes the host.
    pub async fn run_root(
        &self,
        command: &str,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        self.run(&as_root(&self.inner.target.user, command), stdin, timeout)
            .await
    }

    /// Fails with `SshError::NoSudo` if the user is not root and
    /// `sudo -n true` fails.
    pub async fn check_root(&self) -> Result<(), SshError> {
        let target = &self.inner.target;
        if target.user == "root" {
            return Ok(());
        }
        let output = self.run("sudo -n true", None, SUDO_CHECK_TIMEOUT).await?;
        if output.success() {
            return Ok(());
        }
        Err(SshError::NoSudo {
            target: target.endpoint(),
            user: target.user.clone(),
            host: target.host.clone(),
            detail: first_line(&output.stderr)
                .or_else(|| first_line(&output.stdout))
                .map(|line| format!("sudo -n true said: {line}"))
                .unwrap_or_else(|| format!("sudo -n true exited with {}", output.status)),
        })
    }

    /// Writes a file as root, atomically: contents go to
    /// PATH.goblog-lab.tmp (created under umask 077, then given `mode`),
    /// then `mv` over PATH; missing parent directories are created (0755).
    /// Goes through `sudo -n` and stdin rather than SFTP, so it works for
    /// non-root sudo users.
    pub async fn upload(&self, path: &str, contents: Vec<u8>, mode: u32) -> Result<(), SshError> {
        // A minute, plus a second per MiB for slow links.
        let timeout = Duration::from_secs(60 + (contents.len() as u64 >> 20));
        let script = upload_script(path, mode);
        self.run_root(
            &format!("sh -c {}", sh_quote(&script)),
            Some(contents),
            timeout,
        )
        .await?
        .check(&format!("writing {path}"))?;
        Ok(())
    }

    /// Opens a local listener on 127.0.0.1:0 and forwards every accepted
    /// connection through a direct-tcpip channel to remote_host:remote_port
    /// as seen from the SSH server. Dropping the Tunnel stops it.
    pub async fn tunnel(&self, remote_host: &str, remote_port: u16) -> Result<Tunnel, SshError> {
        self.tunnel_on(0, remote_host, remote_port).await
    }

    /// The same, listening on 127.0.0.1:`local_port` (any free port for 0).
    pub async fn tunnel_on(
        &self,
        local_port: u16,
        remote_host: &str,
        remote_port: u16,
    ) -> Result<Tunnel, SshError> {
        tunnel::open(
            self.clone(),
            local_port,
            remote_host.to_string(),
            remote_port,
        )
        .await
    }

    fn run_blocking(
        &self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<Output, SshError> {
        let target = &self.inner.target;
        let what = describe(command);
        let deadline = Deadline::after(timeout);
        let failed = |e| SshError::from_ssh2(&target.endpoint(), &what, timeout, e);

        // An idle session may have died meanwhile (the host rebooted, sshd
        // restarted): then a fresh one, once.
        let reused = self.inner.idle.lock().unwrap().pop();
        let (session, mut channel) = match reused.and_then(|session| {
            session.set_blocking(true);
            deadline.arm(&session, target, &what).ok()?;
            let channel = session.channel_session().ok()?;
            Some((session, channel))
        }) {
            Some(open) => open,
            None => {
                let session = self.open_session()?;
                deadline.arm(&session, target, &what)?;
                let channel = session.channel_session().map_err(failed)?;
                (session, channel)
            }
        };
        channel.exec(command).map_err(failed)?;

        session.set_blocking(false);
        let (stdout, stderr) =
            pump_command(&session, &mut channel, stdin, &deadline, target, &what)?;
        loop {
            match channel.wait_close() {
                Ok(()) => break,
                Err(e) if ssh2_would_block(&e) => {}
                Err(e) => return Err(failed(e)),
            }
            if deadline.remaining().is_none() {
                return Err(deadline.expired(target, &what));
            }
            thread::sleep(Duration::from_millis(1));
        }
        let status = exit_status(&channel).map_err(failed)?;
        drop(channel);
        session.set_blocking(true);
        self.inner.idle.lock().unwrap().push(session);
        Ok(Output {
            status,
            stdout,
            stderr,
            target: target.endpoint(),
        })
    }
}

/// Feeds stdin and collects stdout and stderr until the remote side's EOF.
fn pump_command(
    session: &Session,
    channel: &mut Channel,
    stdin: &[u8],
    deadline: &Deadline,
    target: &Target,
    what: &str,
) -> Result<(Vec<u8>, Vec<u8>), SshError> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut written = 0;
    let mut eof_sent = false;
    let mut backoff = Backoff::new();
    let failed =
        |e: io::Error| SshError::from_channel_io(&target.endpoint(), what, deadline.total, e);
    loop {
        if deadline.remaining().is_none() {
            return Err(deadline.expired(target, what));
        }
        let mut progress = false;

        if !eof_sent {
            if written < stdin.len() {
                match channel.write(&stdin[written..]) {
                    Ok(n) => {
                        written += n;
                        progress |= n > 0;
                    }
                    Err(e) if would_block(&e) => {}
                    // The command closed its stdin or exited: the rest has
                    // no reader, and its output still matters.
                    Err(_) => written = stdin.len(),
                }
            }
            if written >= stdin.len() {
                match channel.send_eof() {
                    Ok(()) => {
                        eof_sent = true;
                        progress = true;
                    }
                    Err(e) if ssh2_would_block(&e) => {}
                    Err(_) => eof_sent = true,
                }
            }
        }

        progress |= drain(&mut channel.stream(0), &mut stdout, &mut buf).map_err(failed)?;
        progress |= drain(&mut channel.stderr(), &mut stderr, &mut buf).map_err(failed)?;
        // libssh2 reports EOF only once no data is queued for either stream.
        if channel.eof() {
            return Ok((stdout, stderr));
        }
        if progress {
            backoff.progressed();
        } else {
            backoff.idle(session);
        }
    }
}

/// Reads what is available now; `true` if anything was.
fn drain(stream: &mut impl Read, into: &mut Vec<u8>, buf: &mut [u8]) -> io::Result<bool> {
    let mut any = false;
    loop {
        match stream.read(buf) {
            Ok(0) => return Ok(any),
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                any = true;
            }
            Err(e) if would_block(&e) => return Ok(any),
            Err(e) => return Err(e),
        }
    }
}

/// The shell's convention: 128 + N for a command killed by signal N.
fn exit_status(channel: &Channel) -> Result<i32, ssh2::Error> {
    if let Some(signal) = channel.exit_signal()?.exit_signal {
        return Ok(128 + signal_number(&signal).unwrap_or(127));
    }
    channel.exit_status()
}

fn signal_number(name: &str) -> Option<i32> {
    Some(match name.trim_start_matches("SIG") {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_commands() {
        assert_eq!(as_root("root", "docker info"), "docker info");
        assert_eq!(
            as_root("admin", "a && b > '/x'"),
            r#"sudo -n sh -c 'a && b > '\''/x'\'''"#
        );
    }

    #[test]
    fn upload_script_is_atomic_and_quoted() {
        assert_eq!(
            upload_script("/etc/docker/daemon.json", 0o644),
            "set -e; umask 022; mkdir -p -- '/etc/docker'; umask 077; \
             trap 'rm -f -- '\\''/etc/docker/daemon.json.goblog-lab.tmp'\\''' EXIT; \
             rm -f -- '/etc/docker/daemon.json.goblog-lab.tmp'; \
             cat > '/etc/docker/daemon.json.goblog-lab.tmp'; \
             chmod 644 -- '/etc/docker/daemon.json.goblog-lab.tmp'; \
             mv -f -- '/etc/docker/daemon.json.goblog-lab.tmp' '/etc/docker/daemon.json'"
        );
        assert!(upload_script("/top", 0o600).contains("mkdir -p -- '/';"));
        assert!(upload_script("it's", 0o600).contains(r"'it'\''s'"));
    }

    #[test]
    fn check_reports_the_first_error_line() {
        let output = Output {
            status: 3,
            stdout: b"partial\n".to_vec(),
            stderr: b"\n  E: no space left\nmore\n".to_vec(),
            target: "root@10.0.0.5:22".into(),
        };
        let message = output.check("installing docker").unwrap_err().to_string();
        assert_eq!(
            message,
            "installing docker failed on root@10.0.0.5:22 (exit status 3): E: no space left"
        );
        let quiet = Output {
            status: 1,
            stdout: vec![],
            stderr: vec![],
            target: "root@h:22".into(),
        };
        assert!(quiet
            .check("x")
            .unwrap_err()
            .to_string()
            .ends_with("it printed nothing"));
    }

    #[test]
    fn describes_commands_briefly() {
        assert_eq!(describe("docker info"), "`docker info`");
        assert_eq!(describe("a\nb"), "`a …`");
        assert_eq!(describe(&"x".repeat(100)), format!("`{}…`", "x".repeat(80)));
    }

    #[test]
    fn signals_map_like_a_shell() {
        assert_eq!(signal_number("KILL"), Some(9));
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("WINCH"), None);
    }
}
