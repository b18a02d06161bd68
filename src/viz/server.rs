//! The visualizer's HTTP side, on 127.0.0.1 only: the page, `/api/state`,
//! and `/api/events` (Server-Sent Events: the whole model first, then each
//! change as a diff). EventSource reconnects by itself, so a page left open
//! across a restart of `viz` recovers without a reload.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::viz::model::Snapshot;
use crate::viz::model::{diff, VizState};

const PAGE: &str = include_str!("index.html");
/// Sent when nothing changed for this long, so the page can tell a quiet
/// Swarm from a stalled poller.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// The current model and the stream of its changes, shared by the poller
/// and every connected page.
pub struct Hub {
    current: watch::Sender<Arc<VizState>>,
    events: broadcast::Sender<Arc<SseEvent>>,
    last_sent: Mutex<Instant>,
}

/// One Server-Sent Event, already encoded.
#[derive(Debug)]
pub struct SseEvent {
    version: u64,
    text: String,
}

impl SseEvent {
    fn new(kind: &str, version: u64, json: &str) -> Self {
        SseEvent {
            version,
            text: format!("event: {kind}\ndata: {json}\n\n"),
        }
    }
}

impl Hub {
    pub fn new(initial: VizState) -> Arc<Self> {
        Arc::new(Hub {
            current: watch::Sender::new(Arc::new(initial)),
            events: broadcast::channel(64).0,
            last_sent: Mutex::new(Instant::now()),
        })
    }

    pub fn current(&self) -> Arc<VizState> {
        self.current.borrow().clone()
    }

    /// Makes `snapshot` the current model and sends pages what changed.
    pub fn publish(&self, snapshot: Snapshot) {
        let last = self.current();
        let mut next = snapshot.apply(&last);
        let mut changes = diff(&last, &next);
        let manager_changed = next.manager.reachable != last.manager.reachable
            || next.manager.error != last.manager.error
            || next.rates != last.rates;
        let mut last_sent = self.last_sent.lock().expect("hub lock");
        if changes.is_empty() && !manager_changed && last_sent.elapsed() < HEARTBEAT_EVERY {
            // The poll time alone changed; keep it for /api/state.
            self.current.send_replace(Arc::new(next));
            return;
        }
        next.version = last.version + 1;
        changes.version = next.version;
        let json = serde_json::to_string(&changes).expect("a diff serialises");
        self.current.send_replace(Arc::new(next));
        // No page listening is fine: the next one starts from `current`.
        let _ = self
            .events
            .send(Arc::new(SseEvent::new("diff", changes.version, &json)));
        *last_sent = Instant::now();
    }
}

/// Serves until the process is stopped.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let hub = hub.clone();
                async move { Ok::<_, Infallible>(route(request, &hub)) }
            });
            // A page that goes away mid-stream is no error worth reporting.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

pub type Body = BoxBody<Bytes, Infallible>;

fn route(request: Request<Incoming>, hub: &Arc<Hub>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    answer(request.uri().path(), hub)
}

/// The answer to a GET of `path`, the part after wherever the page is
/// served from (`/` here; a class serves each lab's under its learner's
/// link). The page asks for `api/...` relative to itself.
pub fn answer(path: &str, hub: &Arc<Hub>) -> Response<Body> {
    match path {
        "/" | "/index.html" => respond(StatusCode::OK, "text/html; charset=utf-8", PAGE.into()),
        "/api/state" => respond(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&*hub.current())
                .expect("the model serialises")
                .into(),
        ),
        "/api/events" => events(hub.clone()),
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The whole model, then every change; a page too slow to keep up gets the
/// whole model again rather than a gap.
fn events(hub: Arc<Hub>) -> Response<Body> {
    let mut changes = hub.events.subscribe();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let full = |state: &VizState| {
            let json = serde_json::to_string(state).expect("the model serialises");
            SseEvent::new("state", state.version, &json)
        };
        let state = hub.current();
        let mut version = state.version;
        if sender.send(full(&state).text.into()).await.is_err() {
            return;
        }
        loop {
            let event = match changes.recv().await {
                Ok(event) if event.version <= version => continue,
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => Arc::new(full(&hub.current())),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            version = event.version;
            if sender.send(event.text.clone().into()).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), receiver))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(StreamBody::new(stream).boxed())
        .expect("a valid response")
}

fn respond(status: StatusCode, content_type: &str, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(body).boxed())
        .expect("a valid response")
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}
