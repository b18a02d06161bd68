//! A loopback relay to a port of a lab machine.
//!
//! This host's engine pushes images to the lab registry on the manager.
//! dockerd trusts a registry on 127.0.0.0/8 without any daemon setting
//! (it skips TLS verification there), but would need `insecure-registries`
//! or a CA under `/etc/docker/certs.d` for the manager's own address, and
//! goblog-lab does not change this host's engine. So pushes go to a relay
//! on 127.0.0.1 that lives only as long as the command that pushes.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::Forward;
use crate::error::{Context, Error, Result};

/// Relays every connection to 127.0.0.1:`port` (any free port for 0) to
/// `target`.
pub async fn tcp(port: u16, target: SocketAddr) -> Result<Forward> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|_| Error::PortInUse {
            port,
            purpose: "the push relay to the lab registry",
            flag: "--registry-port",
        })?;
    let local = listener
        .local_addr()
        .context("reading the relay's loopback port")?;
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stopped.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((mut inbound, _)) = accepted else {
                continue;
            };
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    return;
                };
                tokio::select! {
                    () = stopped.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                }
            });
        }
    });
    Ok(Forward {
        local,
        _guard: Box::new(stop.drop_guard()),
    })
}
