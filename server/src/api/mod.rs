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
//! - [`relay`]: a frame to every client of an action, and its clients;
//! - [`moderation`]: kick, ban, mute, slow mode and deleting a message, as
//!   the moderation frames do, by "server";
//! - [`batch`]: several calls in order, one answer each;
//! - [`info`]: the live instances, their connections, version, broker mode;
//! - [`backup`]: a copy of the embedded default's data file;
//! - `GET /api/openapi.json`: the description of every call (utoipa),
//!   made from the same annotated handlers as the routes;
//! - `POST /api/disconnect`: closes every connection (chat and relay) whose
//!   access token has the subject, on every instance.

mod backup;
mod batch;
mod error;
mod info;
mod moderation;
mod relay;
mod rooms;

use crate::chat::Chat;
use crate::relay::Relay;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
pub use error::{ApiError, ErrorBody};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the API's handlers share.
pub struct Api {
    pub chat: Arc<Chat>,
    pub relay: Arc<Relay>,
    /// When this instance started.
    pub started: Instant,
    /// `API_KEY`; none: loopback callers only.
    pub key: Option<String>,
}

/// The API's description, completed from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Chat server API",
        description = "Drive the chat and the relay from a backend. Every call needs `Authorization: apikey <API_KEY>` (without API_KEY: callers on the server's machine only)."
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

pub fn routes(api: Arc<Api>) -> Router {
    let (calls, doc) = calls().routes(routes!(batch::batch)).split_for_parts();
    let doc = Arc::new(doc);
    calls
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc) }
            }),
        )
        .fallback(|| async { ApiError::NotFound("no such API call".into()) })
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        .layer(middleware::from_fn(count))
        .with_state(api)
}

/// Every call but the batch (and the description), without the key check
/// (a batch's calls were checked with it). The routes and the description
/// come from the same annotated handlers: one cannot list what the other
/// does not serve.
fn calls() -> OpenApiRouter<Arc<Api>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(disconnect))
        .routes(routes!(info::info))
        .routes(routes!(backup::backup))
        .routes(routes!(rooms::list))
        .routes(routes!(rooms::one))
        .routes(routes!(rooms::history))
        .routes(routes!(rooms::post))
        .routes(routes!(relay::frames))
        .routes(routes!(relay::clients))
        .routes(routes!(moderation::kick))
        .routes(routes!(moderation::ban))
        .routes(routes!(moderation::mute))
        .routes(routes!(moderation::slow_mode))
        .routes(routes!(moderation::delete))
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Subject {
    sub: String,
}

#[derive(Serialize, ToSchema)]
struct Disconnected {
    /// Connections closed on the instance that took the call; the others
    /// close theirs as the order reaches them.
    closed_here: usize,
}

/// Closes every chat and relay connection whose access token has this
/// subject, on every instance (close 4003).
#[utoipa::path(post, path = "/api/disconnect", tag = "connections", request_body = Subject,
    responses((status = 202, description = "closed here, and ordered everywhere", body = Disconnected), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
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
