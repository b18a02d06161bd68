//! The quote path (blog part 7) against a real HTTP stub: success, slow,
//! down, and the circuit breaker tripping and recovering.

mod common;

use std::time::{Duration, Instant};

use common::stub::{Mode, QuoteStub};
use common::{fallback_quote, get, Service};
use hyper::StatusCode;

/// Long enough that nobody mistakes "waited for the stub" for "short-circuited".
const SLOW_STUB: Duration = Duration::from_secs(30);

/// `/health`'s head (status line and headers) as it is on the wire.
async fn health_head(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    answer
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn start(env: &[(&str, &str)]) -> (tempfile::TempDir, Service) {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(&dir.path().join("accounts.db"), env);
    (dir, svc)
}

#[tokio::test]
async fn a_healthy_quotes_service_adds_its_quote() {
    let stub = QuoteStub::start(Mode::Healthy, SLOW_STUB).await;
    // A name, not an IP: the quote path resolves it through getaddrinfo.
    let (_dir, svc) = start(&[("QUOTES_URL", &stub.url("localhost"))]);

    let reply = get(svc.port, "/accounts/10007").await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json();
    assert_eq!(json["id"], "10007");
    assert_eq!(json["name"], "Person_7");
    assert_eq!(json["servedBy"], common::first_non_loopback_ipv4());
    assert_eq!(json["quote"], stub.expected_quote());
    assert_eq!(stub.last_path(), "/api/quote?strength=4");
    assert!(reply
        .text()
        .starts_with(r#"{"id":"10007","name":"Person_7","servedBy":""#));

    // Unknown accounts never cost a quote call.
    let before = stub.hits();
    assert_eq!(
        get(svc.port, "/accounts/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(svc.port, "/accounts/20000").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(stub.hits(), before);

    let metrics = get(svc.port, "/metrics").await.text();
    assert!(metrics.contains("accountservice_quote_requests_total{outcome=\"ok\"} 1\n"));
    assert!(metrics.contains("accountservice_quote_breaker_open 0\n"));
    let head = health_head(svc.port).await;
    assert!(
        head.starts_with("http/1.1 200 ok") && !head.contains("x-degraded"),
        "{head}"
    );
}

#[tokio::test]
async fn a_slow_quotes_service_gives_the_fallback_after_the_timeout() {
    let stub = QuoteStub::start(Mode::Slow, SLOW_STUB).await;
    let (_dir, svc) = start(&[
        ("QUOTES_URL", &stub.url("127.0.0.1")),
        ("QUOTES_TIMEOUT_MS", "300"),
    ]);
    let started = Instant::now();
    let reply = get(svc.port, "/accounts/10000").await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["quote"], fallback_quote());
    assert!(
        took >= Duration::from_millis(250),
        "answered before the timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "waited for the stub: {took:?}"
    );
    assert_eq!(stub.hits(), 1);
}

#[tokio::test]
async fn a_failing_quotes_service_gives_the_fallback() {
    let stub = QuoteStub::start(Mode::Failing, SLOW_STUB).await;
    let (_dir, svc) = start(&[("QUOTES_URL", &stub.url("127.0.0.1"))]);
    let reply = get(svc.port, "/accounts/10000").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["quote"], fallback_quote());
    assert_eq!(stub.hits(), 1);
}

#[tokio::test]
async fn a_quotes_service_that_is_down_gives_the_fallback_quickly() {
    // Bind and release a port so nothing listens there: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/api/quote?strength=4");
    let (_dir, svc) = start(&[("QUOTES_URL", &url), ("QUOTES_TIMEOUT_MS", "5000")]);
    let started = Instant::now();
    let reply = get(svc.port, "/accounts/10099").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["name"], "Person_99");
    assert_eq!(reply.json()["quote"], fallback_quote());
    // A refused connection fails at once; nobody waits for the 5 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn https_is_refused_with_a_clear_log_line_and_the_fallback() {
    let (_dir, svc) = start(&[("QUOTES_URL", "https://127.0.0.1:1/api/quote")]);
    let reply = get(svc.port, "/accounts/10000").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["quote"], fallback_quote());
    assert!(svc.stderr().contains("plain http only"), "{}", svc.stderr());
}

/// Far longer than any test runs, so an open breaker stays open for the whole
/// test however slowly a loaded machine gets through it.
const LONG_PAUSE_MS: &str = "3600000";

#[tokio::test]
async fn the_breaker_trips_on_timeouts_and_short_circuits_while_open() {
    let stub = QuoteStub::start(Mode::Slow, SLOW_STUB).await;
    let timeout = Duration::from_millis(1000);
    let (_dir, svc) = start(&[
        ("QUOTES_URL", &stub.url("127.0.0.1")),
        ("QUOTES_TIMEOUT_MS", "1000"),
        ("QUOTES_BREAKER_THRESHOLD", "3"),
        ("QUOTES_BREAKER_PAUSE_MS", LONG_PAUSE_MS),
    ]);

    // Three consecutive timeouts trip the breaker.
    for _ in 0..3 {
        let started = Instant::now();
        let reply = get(svc.port, "/accounts/10000").await;
        assert_eq!(reply.json()["quote"], fallback_quote());
        assert!(started.elapsed() >= timeout - Duration::from_millis(100));
    }
    assert_eq!(stub.hits(), 3);

    // Open: the fallback without calling the stub. No call means no wait
    // for the timeout, which is what makes an open breaker fast; counting
    // the stub's hits proves it without betting on a wall-clock bound.
    for _ in 0..3 {
        let reply = get(svc.port, "/accounts/10001").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["quote"], fallback_quote());
    }
    assert_eq!(stub.hits(), 3, "an open breaker must not call the service");
    let metrics = get(svc.port, "/metrics").await.text();
    assert!(
        metrics.contains("accountservice_quote_breaker_open 1\n"),
        "{metrics}"
    );
    // Still up, and a header says why the quotes are the fallback.
    let head = health_head(svc.port).await;
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(
        head.contains("\r\nx-degraded: quote breaker open"),
        "{head}"
    );
    assert!(
        metrics.contains("accountservice_quote_requests_total{outcome=\"short_circuited\"} 3\n"),
        "{metrics}"
    );
    assert!(
        svc.stderr().contains("circuit breaker open"),
        "{}",
        svc.stderr()
    );
}

#[tokio::test]
async fn an_open_breaker_closes_again_through_a_trial_call() {
    let stub = QuoteStub::start(Mode::Failing, SLOW_STUB).await;
    let (_dir, svc) = start(&[
        ("QUOTES_URL", &stub.url("127.0.0.1")),
        ("QUOTES_BREAKER_THRESHOLD", "3"),
        // Short, so the test need not wait long; nothing here has to land
        // inside it.
        ("QUOTES_BREAKER_PAUSE_MS", "300"),
    ]);

    for _ in 0..3 {
        let reply = get(svc.port, "/accounts/10000").await;
        assert_eq!(reply.json()["quote"], fallback_quote());
    }
    assert_eq!(stub.hits(), 3);
    // The gauge stays 1 until a call finds the pause over, however long
    // that takes, so reading it here is no race.
    let metrics = get(svc.port, "/metrics").await.text();
    assert!(
        metrics.contains("accountservice_quote_breaker_open 1\n"),
        "{metrics}"
    );

    // The service comes back; after the pause a trial call closes the breaker.
    stub.set_mode(Mode::Healthy);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = get(svc.port, "/accounts/10002").await;
        assert_eq!(reply.status, StatusCode::OK);
        if reply.json()["quote"] == stub.expected_quote() {
            break;
        }
        assert_eq!(reply.json()["quote"], fallback_quote());
        assert!(Instant::now() < deadline, "breaker never closed again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Exactly one trial reached the stub on the way back.
    assert_eq!(stub.hits(), 4);
    let metrics = get(svc.port, "/metrics").await.text();
    assert!(
        metrics.contains("accountservice_quote_breaker_open 0\n"),
        "{metrics}"
    );
    let stderr = svc.stderr();
    assert!(stderr.contains("circuit breaker open"), "{stderr}");
    assert!(stderr.contains("half-open"), "{stderr}");
    assert!(stderr.contains("circuit breaker closed"), "{stderr}");
}

#[tokio::test]
async fn a_full_bulkhead_answers_the_fallback_at_once_and_keeps_the_breaker_closed() {
    // The stub holds every call for 30 s: the two calls let out stay out,
    // and every request past them must not wait behind them.
    let stub = QuoteStub::start(Mode::Slow, SLOW_STUB).await;
    let (_dir, svc) = start(&[
        ("QUOTES_URL", &stub.url("127.0.0.1")),
        ("QUOTES_TIMEOUT_MS", "20000"),
        ("QUOTES_MAX_IN_FLIGHT", "2"),
        ("ACCOUNTSERVICE_WORKERS", "2"),
    ]);
    let port = svc.port;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(port, "/accounts/10001").await }))
        .collect();
    // Both calls have reached the stub before the others are asked.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stub.hits() < 2 {
        assert!(
            Instant::now() < deadline,
            "the stub saw {} calls",
            stub.hits()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        let started = Instant::now();
        let reply = get(port, "/accounts/10002").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["quote"], fallback_quote());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a shed call waited: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(stub.hits(), 2, "a shed call reached the quotes service");
    let metrics = get(port, "/metrics").await.text();
    assert!(
        metrics.contains("accountservice_quote_requests_total{outcome=\"shed\"} 5\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("accountservice_quote_breaker_open 0\n"),
        "{metrics}"
    );
    for call in held {
        call.abort();
    }
}
