//! `accountservice healthcheck`: the probe behind the image's HEALTHCHECK.
//!
//! A `FROM scratch` image has no shell and no curl, so the binary probes
//! itself. A blocking socket is enough for one request and keeps the async
//! runtime out of a process that lives for a few milliseconds.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::HealthcheckArgs;

pub fn run(args: &HealthcheckArgs) -> ExitCode {
    match probe(args.port, Duration::from_millis(args.timeout_ms)) {
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
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
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
