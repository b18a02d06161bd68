//! The issue's behaviour table, row by row, against the real binary.

mod common;

use common::{get, request, Service};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};

fn service() -> (tempfile::TempDir, Service) {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(&dir.path().join("accounts.db"), &[]);
    (dir, svc)
}

#[tokio::test]
async fn startup_prints_the_blog_lines_in_order() {
    let (_dir, svc) = service();
    assert_eq!(
        svc.startup_lines,
        vec![
            "Starting accountservice".to_owned(),
            "Seeded 100 fake accounts...".to_owned(),
            format!("Starting HTTP service at {}", svc.port),
        ]
    );
}

#[tokio::test]
async fn a_seeded_account_is_json_with_served_by() {
    let (_dir, svc) = service();
    let reply = get(svc.port, "/accounts/10000").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "application/json");
    assert_eq!(
        reply.json(),
        serde_json::json!({
            "id": "10000",
            "name": "Person_0",
            "servedBy": common::first_non_loopback_ipv4(),
        })
    );
    // Field order as the Go struct serialised it.
    assert!(reply
        .text()
        .starts_with(r#"{"id":"10000","name":"Person_0","servedBy":""#));
}

#[tokio::test]
async fn all_hundred_accounts_are_there_and_no_more() {
    let (_dir, svc) = service();
    for i in 0..100u32 {
        let reply = get(svc.port, &format!("/accounts/{}", 10_000 + i)).await;
        assert_eq!(reply.status, StatusCode::OK, "account {}", 10_000 + i);
        let json = reply.json();
        assert_eq!(json["id"], format!("{}", 10_000 + i));
        assert_eq!(json["name"], format!("Person_{i}"));
    }
    for missing in ["9999", "10100", "0", "010000"] {
        let reply = get(svc.port, &format!("/accounts/{missing}")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "account {missing}");
    }
}

#[tokio::test]
async fn bad_ids_are_404_with_a_json_error_and_never_hurt_the_service() {
    let (_dir, svc) = service();
    let huge_digits = "1".repeat(10 * 1024);
    let huge_letters = "a".repeat(10 * 1024);
    let huge_encoded = "%41".repeat(10 * 1024 / 3);
    let bad = [
        "/accounts/abc",
        "/accounts/",
        "/accounts/-1",
        "/accounts/1e4",
        "/accounts/10000.0",
        "/accounts/%31%30%30%30%30",
        "/accounts/%00",
        "/accounts/%ZZ%",
        "/accounts/%ff%fe%00%0a",
        "/accounts/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/accounts/10000%20OR%201=1",
        "/accounts/%F0%9F%92%A9",
        "/accounts/99999999999999999999999999",
        &format!("/accounts/{huge_digits}"),
        &format!("/accounts/{huge_letters}"),
        &format!("/accounts/{huge_encoded}"),
    ];
    for path in bad {
        let reply = get(svc.port, path).await;
        let shown = &path[..path.len().min(60)];
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{shown}");
        assert_eq!(reply.content_type(), "application/json", "{shown}");
        assert!(reply.body.len() < 200, "small body for {shown}");
        assert!(reply.json()["error"].is_string(), "{shown}");
    }
    // Still alive and well.
    assert_eq!(
        get(svc.port, "/accounts/10001").await.status,
        StatusCode::OK
    );
    assert_eq!(get(svc.port, "/health").await.status, StatusCode::OK);
}

#[tokio::test]
async fn health_can_be_forced_down_and_up() {
    let (_dir, svc) = service();
    let up = get(svc.port, "/health").await;
    assert_eq!(up.status, StatusCode::OK);
    assert_eq!(up.content_type(), "application/json");
    assert_eq!(up.json(), serde_json::json!({"status": "UP"}));

    let forced = get(svc.port, "/testability/healthy/false").await;
    assert_eq!(forced.status, StatusCode::OK);
    assert_eq!(forced.json(), serde_json::json!({"healthy": false}));

    let down = get(svc.port, "/health").await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.json()["status"], "DOWN");
    assert!(down.json()["reason"].as_str().unwrap().contains("forced"));
    // Accounts still answer while health is forced down.
    assert_eq!(
        get(svc.port, "/accounts/10042").await.status,
        StatusCode::OK
    );

    assert_eq!(
        get(svc.port, "/testability/healthy/true").await.status,
        StatusCode::OK
    );
    assert_eq!(get(svc.port, "/health").await.status, StatusCode::OK);

    // Go's strconv.ParseBool spellings, as the blog's handler accepted.
    assert_eq!(
        get(svc.port, "/testability/healthy/0").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(svc.port, "/health").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(svc.port, "/testability/healthy/True").await.status,
        StatusCode::OK
    );
    assert_eq!(get(svc.port, "/health").await.status, StatusCode::OK);
}

#[tokio::test]
async fn testability_rejects_non_booleans_with_400() {
    let (_dir, svc) = service();
    for value in ["maybe", "yes", "2", "%74rue", ""] {
        let reply = get(svc.port, &format!("/testability/healthy/{value}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{value:?}");
        assert!(reply.json()["error"].is_string());
    }
    // A rejected value changes nothing.
    assert_eq!(get(svc.port, "/health").await.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_with_a_latency_histogram() {
    let (_dir, svc) = service();
    for _ in 0..3 {
        assert_eq!(
            get(svc.port, "/accounts/10000").await.status,
            StatusCode::OK
        );
    }
    for _ in 0..2 {
        assert_eq!(
            get(svc.port, "/accounts/nope").await.status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        get(svc.port, "/nowhere").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        request(Method::POST, svc.port, "/health").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );

    let reply = get(svc.port, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply
        .content_type()
        .starts_with("text/plain; version=0.0.4"));
    let text = reply.text();
    for line in [
        r#"accountservice_http_requests_total{route="/accounts/{accountId}",status="200"} 3"#,
        r#"accountservice_http_requests_total{route="/accounts/{accountId}",status="404"} 2"#,
        r#"accountservice_http_requests_total{route="unmatched",status="404"} 1"#,
        r#"accountservice_http_requests_total{route="/health",status="405"} 1"#,
        r#"accountservice_http_request_duration_seconds_bucket{route="/accounts/{accountId}",le="+Inf"} 5"#,
        r#"accountservice_http_request_duration_seconds_count{route="/accounts/{accountId}"} 5"#,
        "# TYPE accountservice_http_request_duration_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.contains(
        r#"accountservice_http_request_duration_seconds_sum{route="/accounts/{accountId}"} "#
    ));
    // Without QUOTES_URL there are no quote metrics.
    assert!(!text.contains("quote"));
}

#[tokio::test]
async fn other_methods_are_405_and_unknown_paths_404() {
    let (_dir, svc) = service();
    for path in [
        "/accounts/10000",
        "/accounts/nope",
        "/health",
        "/testability/healthy/true",
        "/metrics",
    ] {
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let reply = request(method.clone(), svc.port, path).await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(reply.headers["allow"], "GET, HEAD");
            assert!(reply.json()["error"].is_string());
        }
    }
    // The POST to /testability must not have changed anything.
    assert_eq!(get(svc.port, "/health").await.status, StatusCode::OK);

    for path in [
        "/",
        "/accounts",
        "/accounts/10000/",
        "/account/10000",
        "/health/",
        "/metrics/x",
    ] {
        let reply = get(svc.port, path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert!(reply.json()["error"].is_string());
        assert_eq!(
            request(Method::POST, svc.port, path).await.status,
            StatusCode::NOT_FOUND,
            "POST {path}"
        );
    }

    let head = request(Method::HEAD, svc.port, "/accounts/10000").await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn single_and_multi_threaded_runtimes_answer_alike() {
    let mut answers = Vec::new();
    for workers in ["1", "3"] {
        let dir = tempfile::tempdir().unwrap();
        let svc = Service::start(
            &dir.path().join("accounts.db"),
            &[("ACCOUNTSERVICE_WORKERS", workers)],
        );
        let replies = concurrent_gets(svc.port).await;
        for (path, status, _, body) in &replies {
            let expected = match path.as_str() {
                "/accounts/10100" | "/accounts/abc" => StatusCode::NOT_FOUND,
                _ => StatusCode::OK,
            };
            assert_eq!(*status, expected, "workers={workers} {path}");
            // JSON, whichever runtime wrote it.
            serde_json::from_slice::<serde_json::Value>(body)
                .unwrap_or_else(|e| panic!("workers={workers} {path}: {e}"));
        }
        answers.push(replies);
    }
    // Byte for byte, field order included. Even servedBy must match: both
    // services run on this host and report the same address.
    let (single, multi) = (&answers[0], &answers[1]);
    for (one, many) in single.iter().zip(multi) {
        assert_eq!(one, many, "single- vs multi-threaded");
    }
}

/// Concurrent requests, so a multi-threaded runtime really uses its threads:
/// twenty accounts, a missing one, a bad id and /health. Returns path,
/// status, content type and body, in request order.
async fn concurrent_gets(port: u16) -> Vec<(String, StatusCode, String, Bytes)> {
    let paths = (0..20u32)
        .map(|i| format!("/accounts/{}", 10_000 + i))
        .chain(["/accounts/10100", "/accounts/abc", "/health"].map(String::from));
    let tasks: Vec<_> = paths
        .map(|path| {
            tokio::spawn(async move {
                let reply = get(port, &path).await;
                let content_type = reply.content_type().to_owned();
                (path, reply.status, content_type, reply.body)
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}
