//! Listeners on 127.0.0.1 that live only as long as a command needs them.
//!
//! This machine's engine reaches the lab registry through two of them: the
//! provider's relay to the manager and the registry's TLS gateway. Both
//! accept connections until dropped, and close what is still open then, so
//! nothing outlives the push it was opened for.

use std::future::Future;
use std::net::Ipv4Addr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::{Error, Result};

/// Binds 127.0.0.1:`port` (any free port for 0); a taken port is the
/// user's `--registry-port`, the only way one is chosen.
pub async fn bind(port: u16, purpose: &'static str) -> Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|_| Error::PortInUse {
            port,
            purpose,
            flag: "--registry-port",
        })
}

/// Hands every connection `listener` accepts to `handle`, each on a task of
/// its own, until the returned guard is dropped; then open connections
/// close too.
pub fn serve<F, Fut>(listener: TcpListener, handle: F) -> DropGuard
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stopped.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((inbound, _)) = accepted else {
                continue;
            };
            let connection = handle(inbound);
            let stopped = stopped.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stopped.cancelled() => {}
                    () = connection => {}
                }
            });
        }
    });
    stop.drop_guard()
}
