//! The quote of the day, fetched from the quotes service (blog part 7).
//!
//! A quote is decoration: the account answer must stay fast and 200 whatever
//! the quotes service does. So every call has a hard timeout, failures give
//! the blog's fallback quote, a bulkhead answers the fallback at once when
//! too many calls are already waiting (Hystrix's semaphore isolation, which
//! the blog's part 11 configures as `MaxConcurrentRequests`), and a circuit
//! breaker stops calling a service that keeps failing. The client is a bare HTTP/1.1 exchange on hyper, one
//! connection per call. Names go through glibc's `getaddrinfo`
//! ([`tokio::net::lookup_host`]): since glibc 2.34 its `files` and `dns`
//! sources are built in, so even the static binary in a `FROM scratch` image
//! reads the `/etc/hosts` and `/etc/resolv.conf` that Docker writes into every
//! container, and finds services through Docker's embedded DNS.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, HOST, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{lookup_host, TcpStream};

use crate::breaker::Breaker;
use crate::metrics::{Metrics, QuoteOutcome};

/// Quote bodies are a sentence; anything bigger is not a quote.
const MAX_BODY: usize = 64 * 1024;

/// Field order is the answer's order: `quote`, `ipAddress`, `language`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    pub quote: String,
    #[serde(default)]
    pub ip_address: String,
    #[serde(default)]
    pub language: String,
}

impl Quote {
    /// The blog's fallback (part 11), served whenever the real call fails.
    pub fn fallback() -> Quote {
        Quote {
            quote: "May the source be with you, always.".to_owned(),
            ip_address: "circuit-breaker".to_owned(),
            language: "en".to_owned(),
        }
    }

    /// Appends the quote as a JSON object, escaping straight into `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("a struct of strings always serialises");
    }
}

#[derive(Debug)]
pub enum QuoteError {
    Resolve {
        host: String,
        source: std::io::Error,
    },
    Connect {
        addrs: Vec<SocketAddr>,
        source: std::io::Error,
    },
    Http(hyper::Error),
    Status(StatusCode),
    Body(String),
    Json(serde_json::Error),
}

impl fmt::Display for QuoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuoteError::Resolve { host, source } => {
                write!(f, "resolving the quotes host {host:?}: {source}")
            }
            QuoteError::Connect { addrs, source } => write!(f, "connecting to {addrs:?}: {source}"),
            QuoteError::Http(e) => write!(f, "HTTP exchange: {e}"),
            QuoteError::Status(s) => write!(f, "quotes service answered {s}"),
            QuoteError::Body(e) => write!(f, "reading the quote body: {e}"),
            QuoteError::Json(e) => write!(f, "quote is not the expected JSON: {e}"),
        }
    }
}

impl std::error::Error for QuoteError {}

/// Where quotes come from, parsed once at start-up.
#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("QUOTES_URL {url:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "QUOTES_URL {url:?} uses https, which this client does not speak \
                     (plain http only); every account gets the fallback quote"
                ))
            }
            _ => return Err(format!("QUOTES_URL {url:?} must start with http://")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("QUOTES_URL {url:?} has no host"))?;
        Ok(Target {
            // getaddrinfo wants an IPv6 literal without the URL's brackets.
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// The calls a replica lets wait on the quotes service at once. A
/// saturated quotes service answers slowly; without a bound every account
/// request queues behind it for the whole timeout.
struct Bulkhead {
    limit: usize,
    in_flight: AtomicUsize,
}

/// A place in the bulkhead, given back when dropped.
struct Seat<'a>(&'a AtomicUsize);

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    fn new(limit: usize) -> Self {
        Bulkhead {
            limit: limit.max(1),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// A seat, or `None` when `limit` calls are already out.
    fn enter(&self) -> Option<Seat<'_>> {
        let mut now = self.in_flight.load(Ordering::Acquire);
        loop {
            if now >= self.limit {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                now,
                now + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Seat(&self.in_flight)),
                Err(seen) => now = seen,
            }
        }
    }
}

pub struct QuoteClient {
    target: Result<Target, String>,
    timeout: Duration,
    breaker: Breaker,
    bulkhead: Bulkhead,
}

impl QuoteClient {
    pub fn new(url: &str, timeout: Duration, breaker: Breaker, max_in_flight: usize) -> Self {
        let target = Target::parse(url);
        match &target {
            Ok(t) => eprintln!(
                "quotes from http://{}{} (timeout {timeout:?}, at most {max_in_flight} calls at once)",
                t.authority, t.path_and_query
            ),
            Err(e) => eprintln!("quotes disabled: {e}"),
        }
        QuoteClient {
            target,
            timeout,
            breaker,
            bulkhead: Bulkhead::new(max_in_flight),
        }
    }

    pub fn breaker_open(&self) -> bool {
        self.target.is_err() || self.breaker.is_open()
    }

    /// A quote, or the fallback; never slower than the timeout.
    pub async fn quote(&self, metrics: &Metrics) -> Quote {
        let Ok(target) = &self.target else {
            metrics.record_quote(QuoteOutcome::Failed);
            return Quote::fallback();
        };
        // Full is not failing: a shed call tells the breaker nothing.
        let Some(_seat) = self.bulkhead.enter() else {
            metrics.record_quote(QuoteOutcome::Shed);
            return Quote::fallback();
        };
        let Some(ticket) = self.breaker.try_call() else {
            metrics.record_quote(QuoteOutcome::ShortCircuited);
            return Quote::fallback();
        };
        match tokio::time::timeout(self.timeout, self.fetch(target)).await {
            Ok(Ok(quote)) => {
                ticket.success();
                metrics.record_quote(QuoteOutcome::Ok);
                quote
            }
            Ok(Err(err)) => {
                ticket.failure();
                metrics.record_quote(QuoteOutcome::Failed);
                eprintln!("quote failed, answering the fallback: {err}");
                Quote::fallback()
            }
            Err(_) => {
                ticket.failure();
                metrics.record_quote(QuoteOutcome::Failed);
                eprintln!(
                    "quote took longer than {:?}, answering the fallback",
                    self.timeout
                );
                Quote::fallback()
            }
        }
    }

    async fn fetch(&self, target: &Target) -> Result<Quote, QuoteError> {
        // getaddrinfo blocks, so tokio runs it on a blocking thread. The
        // caller's timeout stops waiting for it; the thread itself finishes
        // when glibc's own resolver timeout (resolv.conf `options`) expires.
        let addrs: Vec<SocketAddr> = lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|source| QuoteError::Resolve {
                host: target.host.clone(),
                source,
            })?
            .collect();
        let stream = connect_any(addrs).await?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(QuoteError::Http)?;
        let request = Request::get(target.path_and_query.as_str())
            .header(HOST, target.authority.as_str())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "accountservice")
            .body(Empty::<Bytes>::new())
            .expect("the URL parts were validated at start-up");
        // The sender moves in here, so the connection task below ends as soon
        // as this exchange is over (or when the timeout drops both).
        let exchange = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(QuoteError::Http)?;
            if response.status() != StatusCode::OK {
                return Err(QuoteError::Status(response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| QuoteError::Body(e.to_string()))?
                .to_bytes();
            serde_json::from_slice::<Quote>(&body).map_err(QuoteError::Json)
        };
        let (result, _connection_end) = tokio::join!(exchange, conn);
        result
    }
}

/// Tries the addresses in getaddrinfo's order (RFC 6724; `localhost` may give
/// `::1` first to a service listening on 127.0.0.1 only).
async fn connect_any(addrs: Vec<SocketAddr>) -> Result<TcpStream, QuoteError> {
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(QuoteError::Connect {
        addrs,
        source: last.unwrap_or_else(|| std::io::Error::other("no address")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bulkhead_seats_its_limit_and_frees_a_seat_when_a_call_ends() {
        let bulkhead = Bulkhead::new(2);
        let a = bulkhead.enter().expect("first seat");
        let b = bulkhead.enter().expect("second seat");
        assert!(bulkhead.enter().is_none(), "a third call waits for no one");
        drop(a);
        let c = bulkhead.enter().expect("a freed seat is taken again");
        drop((b, c));
        assert_eq!(bulkhead.in_flight.load(Ordering::Acquire), 0);
        assert!(
            Bulkhead::new(0).enter().is_some(),
            "a limit of 0 still lets one call out"
        );
    }

    #[test]
    fn parses_the_blog_url_and_refuses_https() {
        let t = Target::parse("http://quotes-service:8080/api/quote?strength=4").unwrap();
        assert_eq!(t.host, "quotes-service");
        assert_eq!(t.port, 8080);
        assert_eq!(t.authority, "quotes-service:8080");
        assert_eq!(t.path_and_query, "/api/quote?strength=4");

        let t = Target::parse("http://10.0.0.2").unwrap();
        assert_eq!((t.port, t.path_and_query.as_str()), (80, "/"));

        let t = Target::parse("http://[::1]:8080/q").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority.as_str()),
            ("::1", "[::1]:8080")
        );

        assert!(Target::parse("https://quotes-service/api")
            .unwrap_err()
            .contains("plain http only"));
        assert!(Target::parse("quotes-service:8080").is_err());
    }

    #[test]
    fn quote_json_keeps_its_field_order_and_escapes() {
        let q = Quote {
            quote: "He said \"no\"\\\n\t\u{1} — 漢字 😀".to_owned(),
            ip_address: "10.0.0.9:8080".to_owned(),
            language: "en".to_owned(),
        };
        let mut out = b"x".to_vec();
        q.write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"x{"quote":"He said \"no\"\\\n\t\u0001 — 漢字 😀","ipAddress":"10.0.0.9:8080","language":"en"}"#
        );
    }

    #[test]
    fn quote_json_round_trips() {
        let q: Quote = serde_json::from_str(
            r#"{"quote":"Hi \"there\"","ipAddress":"q/1.2.3.4:8080","language":"en","extra":1}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        q.write_json(&mut out);
        let back: Quote = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, q);
    }
}
