//! A loopback relay to a port of a lab machine.
//!
//! This host's engine pushes images to the lab registry on the manager.
//! It needs no daemon setting for a registry on 127.0.0.0/8, but would need
//! `insecure-registries` or a CA under `/etc/docker/certs.d` for the
//! manager's own address, and goblog-lab does not change this host's
//! engine. So pushes go to 127.0.0.1, and a dind node, whose address this
//! host routes to, is reached through this relay.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::Forward;
use crate::error::{Context, Result};
use crate::loopback;

/// Relays every connection to 127.0.0.1:`port` (any free port for 0) to
/// `target`.
pub async fn tcp(port: u16, target: SocketAddr) -> Result<Forward> {
    let listener = loopback::bind(port, "the relay to the lab registry").await?;
    let local = listener
        .local_addr()
        .context("reading the relay's loopback port")?;
    let guard = loopback::serve(listener, move |mut inbound| async move {
        if let Ok(mut outbound) = TcpStream::connect(target).await {
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        }
    });
    Ok(Forward {
        local,
        _guard: Box::new(guard),
    })
}
