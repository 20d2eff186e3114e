//! Rooms for the backend: the list, one room's state and history, and
//! posting a message.

use super::{Api, ApiError, ErrorBody};
use crate::chat::query::RoomState;
use app::protocol::{valid_room, MessageText, Position, Pseudo, RoomSummary, MAX_PAGE};
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn room(room: String) -> Result<String, ApiError> {
    if valid_room(&room) {
        return Ok(room);
    }
    let why = "room must be 1 to 64 letters, digits, '-' or '_'";
    Err(ApiError::Invalid(why.into()))
}

/// A JSON body made of stored frames, sent as they are.
fn raw_json(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("a valid response")
}

#[derive(Serialize, ToSchema)]
pub struct Rooms {
    /// `name`, `count` (participants on every instance) and `activity`
    /// (the newest event's offset), busiest first.
    #[schema(value_type = Vec<Object>)]
    rooms: Vec<RoomSummary>,
}

/// The rooms with participants.
#[utoipa::path(get, path = "/api/rooms", tag = "rooms", responses((status = 200, body = Rooms), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn list(State(api): State<Arc<Api>>) -> Result<Json<Rooms>, ApiError> {
    let rooms = api.chat.rooms().await?;
    Ok(Json(Rooms { rooms }))
}

#[derive(Serialize, ToSchema)]
pub struct Room {
    name: String,
    count: u64,
    online: Vec<String>,
    epoch: String,
    offset: u64,
}

/// One room: its count, online list and stream position.
#[utoipa::path(get, path = "/api/rooms/{room}", tag = "rooms", params(("room" = String, Path, description = "the room: 1 to 64 letters, digits, - or _")), responses((status = 200, body = Room), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn one(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Json<Room>, ApiError> {
    let name = room(name)?;
    let RoomState {
        count,
        online,
        epoch,
        offset,
    } = api.chat.room_state(&name).await?;
    Ok(Json(Room {
        name,
        count,
        online,
        epoch,
        offset,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// `<epoch>:<offset>`, as events carry them: the events after it.
    since: Option<String>,
    /// An offset: the newest events below it (scroll-back); not with
    /// `since`.
    before: Option<u64>,
    /// At most this many events, the oldest first (with `since`, default
    /// and most: the whole history; with `before`: 1 to 200, default 50).
    limit: Option<usize>,
}

/// `{"epoch","offset","recovered","more","newest","events":[…]}`: the
/// events after `since`, as clients receive them; `offset` is the stream's
/// newest, `more` says that `limit` left some out (ask again from the last
/// one), `newest` that the answer reaches the newest event. With `before`:
/// `{"epoch","oldest","events":[…]}`, the newest `limit` events below it,
/// `oldest` when nothing older is retained.
#[utoipa::path(get, path = "/api/rooms/{room}/history", tag = "rooms", params(("room" = String, Path, description = "the room: 1 to 64 letters, digits, - or _"), HistoryQuery),
    responses((status = 200, description = "with since: `epoch`, `offset`, `recovered`, `more`, `newest` and `events`, as clients receive them; with before: `epoch`, `oldest` and `events`", body = Object), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn history(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let name = room(name)?;
    let Query(HistoryQuery {
        since,
        before,
        limit,
    }) = query.map_err(|err| ApiError::Invalid(err.body_text()))?;
    if let Some(before) = before {
        if since.is_some() {
            return Err(ApiError::Invalid("give since or before, not both".into()));
        }
        return page(&api, &name, before, limit).await;
    }
    let since = match since {
        Some(since) => Some(Position::from_query(&since).ok_or_else(|| {
            ApiError::Invalid("since must be <epoch>:<offset>, as events carry them".into())
        })?),
        None => None,
    };
    let mut snapshot = api.chat.history(&name, since).await?;
    let more = limit.is_some_and(|limit| snapshot.events.len() > limit);
    if let Some(limit) = limit {
        snapshot.events.truncate(limit);
    }
    let events: Vec<&str> = snapshot.events.iter().map(|e| e.as_str()).collect();
    let head = serde_json::json!({
        "epoch": snapshot.epoch,
        "offset": snapshot.offset,
        "recovered": snapshot.recovered,
        "more": more,
        "newest": !more,
    })
    .to_string();
    // The stored frames go out as they are.
    let body = format!(
        "{},\"events\":[{}]}}",
        head.strip_suffix('}').unwrap_or(&head),
        events.join(",")
    );
    Ok(raw_json(StatusCode::OK, body))
}

/// Scroll-back through the server API.
async fn page(
    api: &Api,
    room: &str,
    before: u64,
    limit: Option<usize>,
) -> Result<Response, ApiError> {
    let limit = limit.unwrap_or(50);
    if before == 0 || !(1..=MAX_PAGE as usize).contains(&limit) {
        let message = format!("before must be 1 or more and limit 1 to {MAX_PAGE}");
        return Err(ApiError::Invalid(message));
    }
    let page = api.chat.page(room, before, limit).await?;
    let events: Vec<&str> = page.events.iter().map(|e| e.as_str()).collect();
    let head = serde_json::json!({"epoch": page.epoch, "oldest": page.oldest}).to_string();
    let body = format!(
        "{},\"events\":[{}]}}",
        head.strip_suffix('}').unwrap_or(&head),
        events.join(",")
    );
    Ok(raw_json(StatusCode::OK, body))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Post {
    author: String,
    text: String,
    /// Makes the post idempotent while the message is in the history; use
    /// a random (v4) id: one a participant guesses and sends first is
    /// theirs (409).
    id: Option<Uuid>,
}

/// Appends a message; answers with the stored event (its `epoch`,
/// `offset` and `id`), the same for a repeat of an `id`.
#[utoipa::path(post, path = "/api/rooms/{room}/messages", tag = "rooms", params(("room" = String, Path, description = "the room: 1 to 64 letters, digits, - or _")), request_body = Post,
    responses((status = 201, description = "the stored event", body = Object), (status = 400, description = "invalid", body = ErrorBody), (status = 409, description = "a participant's message has this id", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn post(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: Result<Json<Post>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(Post { author, text, id }) = body?;
    let name = room(name)?;
    let author =
        Pseudo::parse(&author).map_err(|err| ApiError::Invalid(format!("author: {err}")))?;
    let text =
        MessageText::parse(&text).map_err(|err| ApiError::Invalid(format!("text: {err}")))?;
    let stored = api
        .chat
        .post(&name, &author, text, id)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(
                "a participant's message already has this id: post with another (random) id".into(),
            )
        })?;
    Ok(raw_json(StatusCode::CREATED, stored))
}
