//! Routing and the handlers behind each route.
//!
//! The route table is four fixed shapes, so a hand-written match on the path
//! is both the clearest and the cheapest router. Handlers never panic on
//! input: every malformed id or value is a 4xx with a small JSON body.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::app::App;
use crate::metrics::Route;

pub type Body = Full<Bytes>;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const PROMETHEUS_TEXT: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");

/// Longest id we bother looking up; u64 ids have at most 20 digits.
const MAX_ID_LEN: usize = 20;

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let (route, response) = dispatch(&app, &req).await;
    app.metrics
        .record(route, response.status().as_u16(), started.elapsed());
    Ok(response)
}

enum Target<'a> {
    Account(&'a str),
    Health,
    Testability(&'a str),
    Metrics,
}

fn route(path: &str) -> Option<(Route, Target<'_>)> {
    let single_segment = |rest: &str| !rest.contains('/');
    if let Some(id) = path.strip_prefix("/accounts/") {
        return single_segment(id).then_some((Route::Account, Target::Account(id)));
    }
    if let Some(value) = path.strip_prefix("/testability/healthy/") {
        return single_segment(value).then_some((Route::Testability, Target::Testability(value)));
    }
    match path {
        "/health" => Some((Route::Health, Target::Health)),
        "/metrics" => Some((Route::Metrics, Target::Metrics)),
        _ => None,
    }
}

async fn dispatch(app: &App, req: &Request<Incoming>) -> (Route, Response<Body>) {
    let Some((route, target)) = route(req.uri().path()) else {
        return (
            Route::Unmatched,
            error(StatusCode::NOT_FOUND, "no such path"),
        );
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return (route, response);
    }
    let response = match target {
        Target::Account(id) => account(app, id).await,
        Target::Health => health(app),
        Target::Testability(value) => testability(app, value),
        Target::Metrics => metrics(app),
    };
    (route, response)
}

fn respond(
    status: StatusCode,
    content_type: HeaderValue,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

/// The small `{"error":"..."}` body of 4xx/5xx answers.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// `/health` when the service is down.
#[derive(Serialize)]
struct DownBody<'a> {
    status: &'static str,
    reason: &'a str,
}

/// JSON of a struct of borrowed strings: serde_json escapes them straight
/// into the body, no intermediate `Value`.
fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("a struct of strings always serialises")
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    respond(status, JSON, to_json(&ErrorBody { error: message }))
}

fn is_plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_digit())
}

async fn account(app: &App, id: &str) -> Response<Body> {
    // Ids are digit strings, as the blog's BoltDB keys were. Anything else,
    // including percent-encoded text, cannot be an account: answer without
    // touching the store, and never echo the (possibly huge) input back.
    if !is_plausible_id(id) {
        return error(StatusCode::NOT_FOUND, "no such account");
    }
    let extra = if app.quotes.is_some() { 256 } else { 1 };
    let looked_up = app.store.with_account(id, |stored| {
        // The stored value is the account's JSON object as `Store::seed`
        // wrote it. Serve it as stored and append servedBy, instead of
        // parsing and re-serialising it on every request.
        let open = stored
            .strip_suffix(b"}")
            .filter(|open| open.len() > 1 && open.starts_with(b"{"))?;
        let mut body = Vec::with_capacity(open.len() + app.served_by_field.len() + extra);
        body.extend_from_slice(open);
        body.extend_from_slice(&app.served_by_field);
        Some(body)
    });
    // The read transaction is over here: nothing below holds the store
    // across the (possibly slow) quote call.
    let mut body = match looked_up {
        Ok(Some(Some(body))) => body,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such account"),
        Ok(Some(None)) => {
            eprintln!("account {id} is not stored as a JSON object");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "stored account is corrupt",
            );
        }
        Err(err) => {
            eprintln!("account {id}: {err}");
            return error(StatusCode::SERVICE_UNAVAILABLE, "account store unavailable");
        }
    };
    if let Some(quotes) = &app.quotes {
        let quote = quotes.quote(&app.metrics).await;
        body.extend_from_slice(b",\"quote\":");
        quote.write_json(&mut body);
    }
    body.push(b'}');
    respond(StatusCode::OK, JSON, body)
}

/// The `,"servedBy":"..."` member appended to every account document.
pub fn served_by_field(ip: &str) -> Vec<u8> {
    let mut field = br#","servedBy":"#.to_vec();
    serde_json::to_writer(&mut field, ip).expect("a string always serialises");
    field
}

fn health(app: &App) -> Response<Body> {
    let down = |reason: &str| {
        let body = to_json(&DownBody {
            status: "DOWN",
            reason,
        });
        respond(StatusCode::SERVICE_UNAVAILABLE, JSON, body)
    };
    if app.forced_down.load(Ordering::Relaxed) {
        return down("forced down through /testability/healthy/false");
    }
    match app.store.ping() {
        Ok(()) => {
            let mut up = respond(StatusCode::OK, JSON, &br#"{"status":"UP"}"#[..]);
            // Up either way: an open breaker answers the fallback quote. A
            // header says so, which a health checker can keep as its
            // check's text (the edge proxy's `last_chk`), so a picture of
            // the lab shows the breaker without calling every replica.
            if app.quotes.as_ref().is_some_and(|q| q.breaker_open()) {
                up.headers_mut().insert(
                    DEGRADED,
                    hyper::header::HeaderValue::from_static("quote breaker open"),
                );
            }
            up
        }
        Err(err) => down(&format!("account store: {err}")),
    }
}

/// The header of a `/health` answer that is up but degraded, saying how.
pub const DEGRADED: &str = "x-degraded";

/// Go's `strconv.ParseBool`, which the blog's handler used.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn testability(app: &App, value: &str) -> Response<Body> {
    let Some(healthy) = parse_go_bool(value) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a boolean (true or false)",
        );
    };
    let was_down = app.forced_down.swap(!healthy, Ordering::Relaxed);
    if was_down == healthy {
        eprintln!(
            "health forced {} through /testability",
            if healthy { "up" } else { "down" }
        );
    }
    let body: &'static [u8] = if healthy {
        br#"{"healthy":true}"#
    } else {
        br#"{"healthy":false}"#
    };
    respond(StatusCode::OK, JSON, body)
}

fn metrics(app: &App) -> Response<Body> {
    let breaker_open = app.quotes.as_ref().map(|q| q.breaker_open());
    respond(
        StatusCode::OK,
        PROMETHEUS_TEXT,
        app.metrics.render(breaker_open),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_the_four_shapes() {
        assert!(matches!(
            route("/accounts/10000"),
            Some((Route::Account, Target::Account("10000")))
        ));
        assert!(matches!(
            route("/accounts/"),
            Some((Route::Account, Target::Account("")))
        ));
        assert!(route("/accounts/1/2").is_none());
        assert!(route("/accounts").is_none());
        assert!(matches!(route("/health"), Some((Route::Health, _))));
        assert!(route("/health/").is_none());
        assert!(matches!(
            route("/testability/healthy/false"),
            Some((Route::Testability, Target::Testability("false")))
        ));
        assert!(matches!(route("/metrics"), Some((Route::Metrics, _))));
        assert!(route("/").is_none());
    }

    #[test]
    fn ids_must_be_short_digit_strings() {
        assert!(is_plausible_id("10000"));
        assert!(!is_plausible_id(""));
        assert!(!is_plausible_id("abc"));
        assert!(!is_plausible_id("%31%30"));
        assert!(!is_plausible_id("-1"));
        assert!(!is_plausible_id(&"1".repeat(10_000)));
    }

    /// Pins the bytes: the answers were hand-written JSON before serde_json,
    /// and stayed identical except for \b and \f (which were \u0008 and
    /// \u000c; the same JSON string).
    #[test]
    fn json_bodies_escape_exactly_so() {
        let tricky = "q\"b\\s/\n\r\t\u{0}\u{8}\u{c}\u{1f}\u{7f} é漢😀\u{2028}";
        // Only what JSON requires is escaped: DEL, non-ASCII and U+2028 pass
        // through as UTF-8, and so does the solidus.
        let escaped = "\"q\\\"b\\\\s/\\n\\r\\t\\u0000\\b\\f\\u001f\u{7f} é漢😀\u{2028}\"";
        assert_eq!(
            String::from_utf8(to_json(&ErrorBody { error: tricky })).unwrap(),
            format!(r#"{{"error":{escaped}}}"#)
        );
        assert_eq!(
            String::from_utf8(to_json(&DownBody {
                status: "DOWN",
                reason: tricky
            }))
            .unwrap(),
            format!(r#"{{"status":"DOWN","reason":{escaped}}}"#)
        );
        assert_eq!(
            String::from_utf8(served_by_field(tricky)).unwrap(),
            format!(r#","servedBy":{escaped}"#)
        );
        assert_eq!(served_by_field("10.0.0.7"), br#","servedBy":"10.0.0.7""#);
        let back: String = serde_json::from_str(escaped).unwrap();
        assert_eq!(back, tricky);
    }

    #[test]
    fn booleans_are_read_like_go_does() {
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
        assert_eq!(parse_go_bool(""), None);
    }
}
