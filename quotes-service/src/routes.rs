//! The two routes and their answers. Every answer is JSON made by
//! serde_json; a bad `strength` is a 400 saying what is allowed.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::quotes::Quotes;
use crate::work;

pub type Body = Full<Bytes>;

/// What every request handler shares.
pub struct App {
    pub quotes: Quotes,
    /// `<IPv4>:<port>` of this instance, found once at start-up.
    pub ip_address: String,
}

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(dispatch(&app, req.method(), req.uri().path(), req.uri().query()).await)
}

async fn dispatch(
    app: &Arc<App>,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Response<Body> {
    if !matches!(path, "/api/quote" | "/health") {
        return error(StatusCode::NOT_FOUND, "no such path");
    }
    if !matches!(*method, Method::GET | Method::HEAD) {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if path == "/health" {
        return respond(StatusCode::OK, &json!({ "status": "UP" }));
    }
    let strength = match work::strength(query) {
        Ok(strength) => strength,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    // The work is plain CPU: off the async threads, so a heavy request
    // does not stall /health or the accept loop.
    let app = Arc::clone(app);
    match tokio::task::spawn_blocking(move || {
        work::burn(strength);
        app.quotes.next(&app.ip_address)
    })
    .await
    {
        Ok(answer) => respond(StatusCode::OK, &answer),
        Err(err) => {
            eprintln!("quote worker failed: {err}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "quote worker failed")
        }
    }
}

fn respond(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("answers are plain structs and serialise");
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    respond(status, &json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn app() -> Arc<App> {
        Arc::new(App {
            quotes: Quotes::default(),
            ip_address: "10.0.1.5:8080".into(),
        })
    }

    async fn call(
        method: Method,
        path: &str,
        query: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let response = dispatch(&app(), &method, path, query).await;
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn routes_answer_json() {
        let (status, body) = call(Method::GET, "/health", None).await;
        assert_eq!((status, body), (StatusCode::OK, json!({ "status": "UP" })));

        let (status, body) = call(Method::GET, "/api/quote", Some("strength=4")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["ipAddress"], "10.0.1.5:8080");
        assert_eq!(body["language"], "en");
        assert!(body["quote"].as_str().unwrap().ends_with(')'));

        let (status, body) = call(Method::GET, "/api/quote", Some("strength=x")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body["error"],
            "strength must be a whole number from 0 to 100"
        );

        assert_eq!(call(Method::GET, "/", None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            call(Method::GET, "/api/quote/", None).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(Method::POST, "/api/quote", None).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
