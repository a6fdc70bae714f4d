//! An echo upstream: answers every request with a JSON account of what it received (method,
//! target, headers, body length and SHA-256) and records it for assertions. A few paths do
//! more: `/__slow/<ms>` answers late, `/__big/<bytes>` streams a large body, and a WebSocket
//! upgrade on any path is accepted and echoed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub uri: String,
    /// Every header, names lower case, in order.
    pub headers: Vec<(String, String)>,
    /// Body length in bytes.
    pub body_len: usize,
    /// Hex SHA-256 of the body.
    pub body_sha256: String,
}

impl Seen {
    /// The value of a header (first occurrence), by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running echo upstream.
pub struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl Upstream {
    /// Starts on a free loopback port in the current Tokio runtime.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(req, seen.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received nothing")
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let uri = parts.uri.to_string();
    let is_ws = parts
        .headers
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));

    if is_ws {
        seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            uri,
            headers,
            body_len: 0,
            body_sha256: String::new(),
        });
        let key = parts
            .headers
            .get("sec-websocket-key")
            .map(|k| tokio_tungstenite::tungstenite::handshake::derive_accept_key(k.as_bytes()))
            .unwrap_or_default();
        let req = Request::from_parts(parts, body);
        tokio::spawn(async move {
            if let Ok(upgraded) = hyper::upgrade::on(req).await {
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", key)
            .body(full(Bytes::new()))
            .unwrap();
        return Ok(resp);
    }

    let mut hasher = Sha256::new();
    let mut body_len = 0usize;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            hasher.update(data);
            body_len += data.len();
        }
    }
    let body_sha256 = format!("{:x}", hasher.finalize());
    let record = Seen {
        method: parts.method.to_string(),
        uri: uri.clone(),
        headers: headers.clone(),
        body_len,
        body_sha256: body_sha256.clone(),
    };
    seen.lock().unwrap().push(record);

    let path = parts.uri.path();
    if let Some(ms) = path.strip_prefix("/__slow/") {
        let ms: u64 = ms.parse().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = path.strip_prefix("/__big/") {
        let n: usize = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = n.div_ceil(chunk.len());
        let stream = futures_util::stream::iter((0..chunks).map(move |i| {
            let len = if i + 1 == chunks && n % chunk.len() != 0 {
                n % chunk.len()
            } else {
                chunk.len()
            };
            Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
        }));
        return Ok(Response::builder()
            .header("content-type", "application/octet-stream")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap());
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": uri,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
        "body_sha256": body_sha256,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("set-cookie", "app_session=upstream; Path=/")
        .body(full(serde_json::to_vec(&json).unwrap()))
        .unwrap())
}
