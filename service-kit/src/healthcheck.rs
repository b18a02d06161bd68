//! `<service> healthcheck`: the probe behind each image's HEALTHCHECK.
//!
//! A `FROM scratch` image has no shell and no curl, so the binary probes
//! itself. A blocking socket is enough for one request and keeps the async
//! runtime out of a process that lives for a few milliseconds.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{HealthcheckArgs, Service};

/// Probes `/health` on 127.0.0.1 and says what it saw on stdout, where
/// `docker inspect` shows the health log: the body when the service
/// answered 200, else why it is unhealthy.
pub fn run<S: Service>(args: &HealthcheckArgs<S>) -> ExitCode {
    match probe(args.port, args.timeout()) {
        Ok((200, body)) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            println!("unhealthy: HTTP {status} {body}");
            ExitCode::FAILURE
        }
        Err(err) => {
            println!("unhealthy: {err}");
            ExitCode::FAILURE
        }
    }
}

fn probe(port: u16, timeout: Duration) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write, one segment: `write!` on the bare stream sent the request
    // in three pieces, and a peer that answered the first and closed made
    // the later ones fail with EPIPE instead of showing what it answered
    // (seen under load in the suite: "Broken pipe" for an SSH banner).
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::with_capacity(512);
    // The body is tiny; cap the read so a confused peer cannot make us hoard.
    stream.take(64 * 1024).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .trim()
        .to_owned();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener};
    use std::time::Duration;

    use hyper::{Response, StatusCode};

    use super::probe;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Serves `status` and `body` on every path with the shared accept loop,
    /// on a free loopback port, and probes it as the HEALTHCHECK does.
    async fn probe_a_service(
        status: StatusCode,
        body: &'static str,
    ) -> std::io::Result<(u16, String)> {
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        tokio::spawn(crate::serve(addr, TIMEOUT, move |local| {
            port_tx.send(local.port()).unwrap();
            move |_req| async move {
                let mut response = Response::new(body.to_owned());
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            }
        }));
        let port = port_rx.await.expect("the service binds");
        // The probe blocks; the service answers on this runtime's thread.
        tokio::task::spawn_blocking(move || probe(port, TIMEOUT))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_200_is_healthy_with_the_body() {
        let (status, body) = probe_a_service(StatusCode::OK, r#"{"status":"UP"}"#)
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (200, r#"{"status":"UP"}"#));
    }

    #[tokio::test]
    async fn any_other_status_comes_back_with_its_body() {
        let (status, body) = probe_a_service(StatusCode::SERVICE_UNAVAILABLE, "down")
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (503, "down"));
    }

    #[test]
    fn a_peer_that_does_not_speak_http_is_an_error() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 512];
            let _ = stream.read(&mut request).unwrap();
            stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        });
        let err = probe(port, TIMEOUT).unwrap_err();
        assert_eq!(err.to_string(), "not an HTTP response");
        peer.join().unwrap();
    }

    #[test]
    fn nothing_listening_is_an_error() {
        // Bound but never listening: connecting is refused at once.
        let socket = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = socket.local_addr().unwrap().port();
        drop(socket);
        let err = probe(port, TIMEOUT).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    }
}
