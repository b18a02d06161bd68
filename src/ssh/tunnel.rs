//! Local port forwarding (`ssh -L`) for services only a lab machine sees.
//!
//! The lab reaches a machine's Docker daemon and registry through SSH rather
//! than opening them on the network, and image pushes of hundreds of MB go
//! through here, so this is a data path, not a convenience.
//!
//! Each accepted local connection gets a thread and its own SSH session with
//! one direct-tcpip channel, pumped in non-blocking mode (see
//! `session::Backoff`). One session per connection keeps libssh2 away from
//! multiplexing channels across threads, which it does not do safely, and
//! lets parallel layer uploads run in parallel.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ssh2::{Channel, Session};
use tokio::net::TcpListener;

use super::error::SshError;
use super::session::{would_block, Backoff, Deadline, SshClient};

/// A running forward from a local port. Dropping it closes the listener and
/// ends the connections still open through it.
pub struct Tunnel {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
    last_error: Arc<Mutex<Option<SshError>>>,
}

impl Tunnel {
    /// Where to connect: 127.0.0.1 and the port the system chose.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The most recent failure of a forwarded connection, if any. A failed
    /// connection is just closed on the local side, which tells a client
    /// little; this says why (e.g. the remote port refused).
    pub fn take_error(&self) -> Option<SshError> {
        self.last_error.lock().map(|mut e| e.take()).unwrap_or(None)
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.accept.abort();
    }
}

pub(crate) async fn open(
    client: SshClient,
    local_port: u16,
    remote_host: String,
    remote_port: u16,
) -> Result<Tunnel, SshError> {
    let io_error = |source| SshError::Io {
        target: client.target().endpoint(),
        what: "opening a local port for the tunnel".to_string(),
        source,
    };
    let listener = TcpListener::bind(("127.0.0.1", local_port))
        .await
        .map_err(io_error)?;
    let local_addr = listener.local_addr().map_err(io_error)?;
    let stop = Arc::new(AtomicBool::new(false));
    let last_error = Arc::new(Mutex::new(None));

    let accept = tokio::spawn({
        let stop = stop.clone();
        let last_error = last_error.clone();
        async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, typically: wait for some
                        // to close rather than spin.
                        remember(&last_error, io_error_for(&client, e));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let local = match stream.into_std() {
                    Ok(local) => local,
                    Err(e) => {
                        remember(&last_error, io_error_for(&client, e));
                        continue;
                    }
                };
                let endpoint = client.target().endpoint();
                let client = client.clone();
                let remote_host = remote_host.clone();
                let stop = stop.clone();
                let thread_error = last_error.clone();
                let spawned = thread::Builder::new()
                    .name(format!("ssh-tunnel-{remote_port}"))
                    .spawn(move || {
                        // The error is stored before `local` closes, so a
                        // client that sees the close can already read why.
                        if let Err(e) = forward(&client, &local, &remote_host, remote_port, &stop) {
                            remember(&thread_error, e);
                        }
                        drop(local);
                    });
                if let Err(source) = spawned {
                    remember(
                        &last_error,
                        SshError::Io {
                            target: endpoint,
                            what: "starting a tunnel thread".to_string(),
                            source,
                        },
                    );
                }
            }
        }
    });

    Ok(Tunnel {
        local_addr,
        stop,
        accept,
        last_error,
    })
}

fn remember(slot: &Mutex<Option<SshError>>, error: SshError) {
    if let Ok(mut slot) = slot.lock() {
        *slot = Some(error);
    }
}

fn io_error_for(client: &SshClient, source: io::Error) -> SshError {
    SshError::Io {
        target: client.target().endpoint(),
        what: "accepting a tunnel connection".to_string(),
        source,
    }
}

/// Carries one local connection to `remote_host:remote_port`.
fn forward(
    client: &SshClient,
    local: &TcpStream,
    remote_host: &str,
    remote_port: u16,
    stop: &AtomicBool,
) -> Result<(), SshError> {
    let target = client.target();
    let what = format!("forwarding to {remote_host}:{remote_port}");
    let session = client.open_session()?;
    let timeout = client.connect_timeout();
    Deadline::after(timeout).arm(&session, target, &what)?;
    let mut channel = session
        .channel_direct_tcpip(remote_host, remote_port, None)
        .map_err(|e| SshError::from_ssh2(&target.endpoint(), &what, timeout, e))?;

    session.set_blocking(false);
    local.set_nonblocking(true).map_err(|source| SshError::Io {
        target: target.endpoint(),
        what: what.clone(),
        source,
    })?;
    let result = pump(&session, &mut channel, local, stop)
        .map_err(|e| SshError::from_channel_io(&target.endpoint(), &what, Duration::ZERO, e));

    session.set_blocking(true);
    session.set_timeout(1000);
    let _ = channel.close();
    drop(channel);
    let _ = session.disconnect(None, "tunnel closed", None);
    result
}

/// Moves bytes both ways until both sides have finished sending, passing
/// each side's EOF on (half-close), so request/response protocols that rely
/// on it work.
fn pump(
    session: &Session,
    channel: &mut Channel,
    mut local: &TcpStream,
    stop: &AtomicBool,
) -> io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let mut up: Vec<u8> = Vec::with_capacity(CHUNK); // local → remote
    let mut down: Vec<u8> = Vec::with_capacity(CHUNK); // remote → local
    let mut buf = vec![0u8; CHUNK];
    let mut local_eof = false;
    let mut eof_sent = false;
    let mut remote_eof = false;
    let mut local_shut = false;
    let mut backoff = Backoff::new();

    while !stop.load(Ordering::Relaxed) {
        let mut progress = false;

        if up.is_empty() && !local_eof {
            match local.read(&mut buf) {
                Ok(0) => {
                    local_eof = true;
                    progress = true;
                }
                Ok(n) => {
                    up.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if would_block(&e) => {}
                // Reset by the local client: nobody is left to serve.
                Err(_) => return Ok(()),
            }
        }
        if !up.is_empty() {
            // libssh2 takes at most one packet (32 KB) per call; a partly
            // sent packet is finished by the next call with the same bytes,
            // which `up` still starts with.
            match channel.write(&up) {
                Ok(n) => {
                    up.drain(..n);
                    progress |= n > 0;
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if local_eof && up.is_empty() && !eof_sent {
            match channel.send_eof() {
                Ok(()) => {
                    eof_sent = true;
                    progress = true;
                }
                Err(e) => {
                    let e = io::Error::from(e);
                    if !would_block(&e) {
                        return Err(e);
                    }
                }
            }
        }

        if down.is_empty() && !remote_eof {
            match channel.read(&mut buf) {
                Ok(0) if channel.eof() => {
                    remote_eof = true;
                    progress = true;
                }
                Ok(0) => {}
                Ok(n) => {
                    down.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if !down.is_empty() {
            match local.write(&down) {
                Ok(n) => {
                    down.drain(..n);
                    progress |= n > 0;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return Ok(()),
            }
        }
        if remote_eof && down.is_empty() && !local_shut {
            let _ = local.shutdown(Shutdown::Write);
            local_shut = true;
            progress = true;
        }

        if eof_sent && local_shut {
            return Ok(());
        }
        if progress {
            backoff.progressed();
        } else {
            backoff.idle(session);
        }
    }
    Ok(())
}
