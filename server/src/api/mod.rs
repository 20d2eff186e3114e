//! The server API for a backend, under `/api/` on the admin port: every
//! call needs `Authorization: apikey <API_KEY>`; without `API_KEY` only
//! callers on this machine are answered (and the server refuses to start
//! with the admin port on another address and no key, see
//! `config::validate`). Errors are typed JSON (`{"error":"code",
//! "message":"…"}`) with a fitting status; every call is counted in
//! `api_calls_total{call,status}`.
//!
//! - [`rooms`]: the room list, a room's count, online list and position,
//!   its history, and posting a message (marked as from the server);
//! - [`relay`]: a frame to every client of an action;
//! - [`moderation`]: kick, ban, mute, slow mode and deleting a message, as
//!   the moderation frames do, by "server";
//! - `POST /api/disconnect`: closes every connection (chat and relay) whose
//!   access token has the subject, on every instance.

mod error;
mod moderation;
mod relay;
mod rooms;

use crate::chat::Chat;
use crate::relay::Relay;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
pub use error::ApiError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What the API's handlers share.
pub struct Api {
    pub chat: Arc<Chat>,
    pub relay: Arc<Relay>,
    /// `API_KEY`; none: loopback callers only.
    pub key: Option<String>,
}

pub fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/disconnect", post(disconnect))
        .route("/api/rooms", get(rooms::list))
        .route("/api/rooms/{room}", get(rooms::one))
        .route("/api/rooms/{room}/history", get(rooms::history))
        .route("/api/rooms/{room}/messages", post(rooms::post))
        .route("/api/actions/{action}/frames", post(relay::frames))
        .route("/api/rooms/{room}/kick", post(moderation::kick))
        .route("/api/rooms/{room}/ban", post(moderation::ban))
        .route("/api/rooms/{room}/mute", post(moderation::mute))
        .route("/api/rooms/{room}/slow_mode", post(moderation::slow_mode))
        .route(
            "/api/rooms/{room}/messages/{id}",
            delete(moderation::delete),
        )
        .fallback(|| async { ApiError::NotFound("no such API call".into()) })
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        .layer(middleware::from_fn(count))
        .with_state(api)
}

/// Lets through a caller with the key, or, without a key configured, a
/// caller on this machine.
async fn authorize(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = match &api.key {
        Some(key) => request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("apikey "))
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(key.as_bytes()))),
        None => peer.ip().is_loopback(),
    };
    if !allowed {
        let why = match api.key {
            Some(_) => "a valid Authorization: apikey <API_KEY> header is required",
            None => "without API_KEY the API answers callers on this machine only",
        };
        return ApiError::Unauthorized(why.into()).into_response();
    }
    next.run(request).await
}

/// Counts every call by route and status.
async fn count(path: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let call = format!(
        "{} {}",
        request.method(),
        path.as_ref().map_or("unknown", |p| p.as_str())
    );
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("api_calls_total", "call" => call, "status" => status).increment(1);
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subject {
    sub: String,
}

#[derive(Serialize)]
struct Disconnected {
    /// Connections closed on the instance that took the call; the others
    /// close theirs as the order reaches them.
    closed_here: usize,
}

async fn disconnect(
    State(api): State<Arc<Api>>,
    body: Result<Json<Subject>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Disconnected>), ApiError> {
    let Json(Subject { sub }) = body?;
    if sub.is_empty() {
        return Err(ApiError::Invalid("sub must not be empty".into()));
    }
    let closed_here = api.chat.disconnect(&sub);
    Ok((StatusCode::ACCEPTED, Json(Disconnected { closed_here })))
}
