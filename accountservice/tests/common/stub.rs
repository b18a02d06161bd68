//! A real HTTP quotes service stand-in whose behaviour a test can switch.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 with a quote.
    Healthy = 0,
    /// Answers the quote only after `slow_delay`.
    Slow = 1,
    /// 500.
    Failing = 2,
    /// Answers the quote only once the test calls [`QuoteStub::release`], so
    /// a test decides when an account request stops being in flight.
    Held = 3,
}

pub struct QuoteStub {
    pub port: u16,
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicU32>,
    last_path: Arc<Mutex<String>>,
    released: tokio::sync::watch::Sender<bool>,
}

pub const STUB_QUOTE: &str = "Do or do not. There is no try.";

impl QuoteStub {
    /// Starts the stub on a free loopback port, on the calling test's runtime.
    pub async fn start(mode: Mode, slow_delay: Duration) -> QuoteStub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode_flag = Arc::new(AtomicU8::new(mode as u8));
        let hits = Arc::new(AtomicU32::new(0));
        let last_path = Arc::new(Mutex::new(String::new()));
        let (released, released_rx) = tokio::sync::watch::channel(false);
        let stub = QuoteStub {
            port,
            mode: mode_flag.clone(),
            hits: hits.clone(),
            last_path: last_path.clone(),
            released,
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (mode_flag, hits, last_path, released_rx) = (
                    mode_flag.clone(),
                    hits.clone(),
                    last_path.clone(),
                    released_rx.clone(),
                );
                let service = service_fn(move |req: Request<Incoming>| {
                    let mode = mode_flag.load(Ordering::SeqCst);
                    hits.fetch_add(1, Ordering::SeqCst);
                    *last_path.lock().unwrap() = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    let mut released_rx = released_rx.clone();
                    async move {
                        if mode == Mode::Slow as u8 {
                            tokio::time::sleep(slow_delay).await;
                        }
                        if mode == Mode::Held as u8 {
                            // Err only if the stub is gone: answer anyway.
                            let _ = released_rx.wait_for(|released| *released).await;
                        }
                        let mut response = if mode == Mode::Failing as u8 {
                            Response::new(Full::new(Bytes::from_static(b"boom")))
                        } else {
                            Response::new(Full::new(Bytes::from(format!(
                                r#"{{"quote":"{STUB_QUOTE}","ipAddress":"quotes-stub/127.0.0.1:{port}","language":"en"}}"#
                            ))))
                        };
                        if mode == Mode::Failing as u8 {
                            *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        stub
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Lets every held request (and any later one) answer.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    pub fn hits(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last_path(&self) -> String {
        self.last_path.lock().unwrap().clone()
    }

    pub fn url(&self, host: &str) -> String {
        format!("http://{host}:{}/api/quote?strength=4", self.port)
    }

    pub fn expected_quote(&self) -> serde_json::Value {
        serde_json::json!({
            "quote": STUB_QUOTE,
            "ipAddress": format!("quotes-stub/127.0.0.1:{}", self.port),
            "language": "en"
        })
    }
}
