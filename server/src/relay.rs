//! The action relay, wire-compatible with the original Node `ws` server.
//!
//! The first frame registers: a JSON object with a non-empty string
//! `action`. The client gets an id, recorded under the action in Redis, and
//! from then on every JSON frame it sends is forwarded byte for byte to every
//! other client of the same action, on every instance.

use crate::hub::{close, ConnId, Kind, Peer, Topic};
use crate::socket::{self, Handler};
use crate::{auth, metrics, AppState};
use app::protocol::ErrorCode;
use app::relay::{check_frame, registration_action};
use axum::extract::ws::{Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

pub async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    State(app): State<Arc<AppState>>,
) -> Response {
    let slot = match app.guard.admit(Kind::Relay, &headers, peer, &app.shutdown) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned());
    let tracked = app.clone();
    socket::configure(ws, &app.config).on_upgrade(move |socket| {
        tracked.tasks.clone().track_future(async move {
            // The connection counts as open until its session ends.
            let _slot = slot;
            session(tracked, socket, bearer).await;
        })
    })
}

async fn session(app: Arc<AppState>, socket: WebSocket, bearer: Option<String>) {
    let id = Uuid::new_v4();
    let opened = Instant::now();
    let (peer, queue) = Peer::new(Kind::Relay, app.config.outbound_queue as usize);
    metrics::connection_opened(Kind::Relay);
    tracing::info!(conn = %id, kind = "relay", "connection opened");
    let mut relay = RelaySession {
        app: app.clone(),
        id,
        peer: peer.clone(),
        action: None,
        bearer,
    };
    let reason = socket::drive(
        socket,
        peer,
        queue,
        socket::Preamble::default(),
        &mut relay,
        &app.limits,
        &app.shutdown,
    )
    .await;
    let action = relay.action.take();
    if let Some((action, topic)) = &action {
        app.bus.unsubscribe(topic, id);
        // On shutdown the instance's entries are removed all at once.
        if !app.shutdown.is_cancelled() {
            app.store.relay_unregister(action, id).await;
        }
    }
    metrics::connection_closed(Kind::Relay);
    tracing::info!(
        conn = %id,
        kind = "relay",
        action = action.map(|(a, _)| a),
        duration_ms = opened.elapsed().as_millis() as u64,
        reason,
        "connection closed"
    );
}

struct RelaySession {
    app: Arc<AppState>,
    id: ConnId,
    peer: Peer,
    action: Option<(String, Topic)>,
    /// The token of an `Authorization: Bearer` header, if any.
    bearer: Option<String>,
}

impl Handler for RelaySession {
    const KIND: Kind = Kind::Relay;

    async fn on_text(&mut self, text: Utf8Bytes) -> Option<(u16, &'static str)> {
        let Some((action, topic)) = &self.action else {
            return self.register(text).await;
        };
        if let Err(reason) = check_frame(&text) {
            metrics::error("relay", "invalid_json");
            self.peer.send(error_frame(&reason));
            return None;
        }
        tracing::debug!(conn = %self.id, action, message = %text, "relay message");
        self.app.bus.broadcast(topic, text, Some(self.id)).await;
        None
    }

    fn error_frame(&self, _code: ErrorCode, message: &str) -> Utf8Bytes {
        error_frame(message)
    }

    /// A binary first frame is not a registration: refused like any other.
    fn on_binary(&self) -> Option<(u16, &'static str)> {
        self.action
            .is_none()
            .then_some((close::POLICY, "registration refused"))
    }
}

impl RelaySession {
    /// With `RELAY_AUTH=required`: checks the token (the registration's
    /// `token`, else the Bearer header) and returns the registration to
    /// record, without the token and with the token's `sub`.
    fn authorize(&self, action: &str, text: Utf8Bytes) -> Result<Utf8Bytes, auth::Refused> {
        let Some(verifier) = &self.app.relay_auth else {
            return Ok(text);
        };
        let mut fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|_| auth::Refused::Malformed)?;
        let token = match fields.remove("token") {
            Some(serde_json::Value::String(token)) => token,
            Some(_) => return Err(auth::Refused::Malformed),
            None => self.bearer.clone().ok_or(auth::Refused::Missing)?,
        };
        let grant = verifier.verify(&token)?;
        if !grant.allows(action) {
            return Err(auth::Refused::OutOfScope);
        }
        tracing::info!(conn = %self.id, action, sub = grant.sub.as_deref(), "relay token accepted");
        match grant.sub {
            Some(sub) => fields.insert("sub".into(), sub.into()),
            None => fields.remove("sub"),
        };
        Ok(serde_json::Value::Object(fields).to_string().into())
    }

    async fn register(&mut self, text: Utf8Bytes) -> Option<(u16, &'static str)> {
        let action = match registration_action(&text) {
            Ok(action) => action,
            Err(reason) => {
                metrics::error("relay", "registration");
                self.peer.send(error_frame(&reason));
                return Some((close::POLICY, "registration refused"));
            }
        };
        let text = match self.authorize(&action, text) {
            Ok(text) => text,
            Err(refused) => {
                metrics::error("relay", refused.label());
                tracing::info!(conn = %self.id, action, reason = refused.label(), "relay registration refused");
                self.peer.send(error_frame(&refused.to_string()));
                return Some((close::POLICY, "access token refused"));
            }
        };
        let topic = Topic::Action(action.clone());
        // Recorded before any await, so that a connection cut short during
        // registration is still unregistered when it closes.
        self.action = Some((action.clone(), topic.clone()));
        self.app.store.relay_register(&action, self.id, &text).await;
        let reply = encode(&Reply::Registered {
            id: self.id,
            action: &action,
        });
        self.app
            .bus
            .subscribe_after(&topic, self.id, self.peer.clone(), reply)
            .await;
        tracing::info!(conn = %self.id, action, "relay client registered");
        None
    }
}

/// The relay's replies, with keys in the original's order.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Reply<'a> {
    Registered { id: ConnId, action: &'a str },
    Error { error: &'a str },
}

fn encode(reply: &Reply) -> Utf8Bytes {
    // A tag and strings: serialization cannot fail.
    serde_json::to_string(reply)
        .expect("relay replies serialize")
        .into()
}

fn error_frame(reason: &str) -> Utf8Bytes {
    encode(&Reply::Error { error: reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_keep_the_original_key_order() {
        let id = Uuid::nil();
        let registered = encode(&Reply::Registered { id, action: "a" });
        assert_eq!(
            registered.as_str(),
            format!(r#"{{"type":"registered","id":"{id}","action":"a"}}"#)
        );
        assert_eq!(error_frame("x").as_str(), r#"{"type":"error","error":"x"}"#);
    }
}
