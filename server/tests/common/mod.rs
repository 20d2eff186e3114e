//! Test harness: a real redis-server on a free port ([`redis`]), servers
//! as processes of the built binary ([`process`]) or in this process
//! ([`inproc`], several of them sharing one in-memory broker), and real
//! WebSocket clients ([`client`]).
// Each test file uses a different part of the harness.
#![allow(dead_code, unused_imports)]

mod client;
mod inproc;
mod process;
mod receiver;
mod redis;

pub use client::*;
pub use inproc::*;
pub use process::*;
pub use receiver::*;
pub use redis::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(10);

/// A server a client can reach, in a process or in this one.
pub trait Endpoint {
    /// The public port: page, chat socket, `/relay`.
    fn http(&self) -> SocketAddr;

    fn chat_url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.http())
    }

    fn relay_url(&self) -> String {
        format!("ws://{}/relay", self.http())
    }
}

/// A minimal HTTP/1.1 GET, enough for /healthz and /metrics.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[], "").await
}

/// A minimal HTTP/1.1 request with headers and a body (JSON, for the API).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    // Chunked bodies: keep only the payload lines.
    let body = if response
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split("\r\n")
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join("")
    } else {
        body.to_owned()
    };
    (status, body)
}

/// A call of the server API on the instance's admin port, with the key
/// when given; the answer's status and JSON body (null when none).
pub async fn api(
    server: &Instance,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let auth = key.map(|key| format!("apikey {key}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, text) = http_request(server.running.admin, method, path, &headers, &body).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A GET whose body is bytes (a file), chunked or not.
pub async fn http_get_bytes(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let mut body = &response[split + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return (status, body.to_vec());
    }
    let mut payload = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = std::str::from_utf8(&body[..line_end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return (status, payload);
        }
        let start = line_end + 2;
        payload.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
}

/// Posts `count` messages through the server API on `admin` (the backend
/// is not rate limited), texts `m<n>` numbered from `from`.
pub async fn post_messages(admin: SocketAddr, room: &str, from: usize, count: usize) {
    for n in from..from + count {
        let body = serde_json::json!({"author": "bot", "text": format!("m{n}")}).to_string();
        let path = format!("/api/rooms/{room}/messages");
        let (status, answer) = http_request(admin, "POST", &path, &[], &body).await;
        assert_eq!(status, 201, "{answer}");
    }
}

/// Every event the room retains, oldest first, read back page by page
/// through the server API's `before=` until a page says it is the oldest.
pub async fn retained_events(admin: SocketAddr, room: &str) -> Vec<serde_json::Value> {
    let mut before = u64::MAX / 2;
    let mut events = Vec::new();
    loop {
        let path = format!("/api/rooms/{room}/history?before={before}&limit=200");
        let (status, body) = http_get(admin, &path).await;
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let oldest = page["oldest"] == serde_json::Value::Bool(true);
        let page_events = page["events"].as_array().unwrap().clone();
        assert!(
            oldest || !page_events.is_empty(),
            "an empty page that is not the oldest: {body}"
        );
        if let Some(first) = page_events.first() {
            before = first["offset"].as_u64().unwrap();
        }
        events.splice(0..0, page_events);
        if oldest {
            return events;
        }
    }
}
