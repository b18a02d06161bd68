//! A small HTTP/1.1 GET for the lab's own endpoints: the registry's `/v2/`
//! and the accountservice through `$ManagerIP`. Plain HTTP on addresses of
//! this machine and its lab network only.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct HttpClient {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
}

impl HttpClient {
    pub fn new() -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        HttpClient {
            // No pooling: each probe should see a fresh connection, so that the
            // edge proxy's round robin shows every replica.
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
        }
    }

    /// GETs `url`; errors are strings because callers only report or retry.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Response, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let request = async {
            let response = self.client.get(uri).await.map_err(|e| error_chain(&e))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok(Response { status, body })
        };
        tokio::time::timeout(timeout, request)
            .await
            .map_err(|_| format!("no answer from {url} in {}s", timeout.as_secs_f32()))?
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}
