//! Moderation by the backend: the moderation frames' actions, taken by
//! "server" (allowed with or without chat access tokens: the backend is
//! trusted; it cannot edit anyone's message).

use super::rooms::room;
use super::{Api, ApiError, ErrorBody};
use crate::broker::Sanction;
use crate::chat::moderation::Actor;
use crate::chat::sanctions::Named;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::ToSchema;
use uuid::Uuid;

type Body<T> = Result<Json<T>, JsonRejection>;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Kick {
    pseudo: String,
}

/// Who is banned or muted: a nickname in the room (or in its recent
/// history), or, with chat access tokens, a token subject.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    pseudo: Option<String>,
    subject: Option<String>,
    seconds: u64,
    #[serde(default)]
    redact_minutes: u64,
}

/// Who is muted, as for a ban.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mute {
    pseudo: Option<String>,
    subject: Option<String>,
    seconds: u64,
}

/// The one of `pseudo` and `subject` given.
fn named<'a>(
    pseudo: &'a Option<String>,
    subject: &'a Option<String>,
) -> Result<Named<'a>, ApiError> {
    match (pseudo, subject) {
        (Some(pseudo), None) => Ok(Named::Pseudo(pseudo)),
        (None, Some(subject)) => Ok(Named::Subject(subject)),
        _ => Err(ApiError::Invalid(
            "give either pseudo or subject (a token's sub)".into(),
        )),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlowMode {
    seconds: u64,
}

/// Closes the participant's connection on whichever instance (close 4003 `kicked`); says so in the stream.
#[utoipa::path(post, path = "/api/rooms/{room}/kick", tag = "moderation", params(("room" = String, Path, description = "the room: 1 to 64 letters, digits, - or _")), request_body = Kick,
    responses((status = 204, description = "done"), (status = 404, description = "nobody by that nickname (kick)", body = ErrorBody), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn kick(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: Body<Kick>,
) -> Result<StatusCode, ApiError> {
    let Json(Kick { pseudo }) = body?;
    let room = room(name)?;
    api.chat.kick(&room, &pseudo, &Actor::SERVER).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Bans whoever holds the nickname (or the token subject) from the room for `seconds` (0 lifts it), closing their connections there, reading ones too; `redact_minutes` also deletes their recent messages.
#[utoipa::path(post, path = "/api/rooms/{room}/ban", tag = "moderation", params(("room" = String, Path, description = "the room: 1 to 64 letters, digits, - or _")), request_body = Ban,
    responses((status = 204, description = "done"), (status = 404, description = "nobody by that nickname (kick)", body = ErrorBody), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn ban(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: Body<Ban>,
) -> Result<StatusCode, ApiError> {
    let Json(Ban {
        pseudo,
        subject,
        seconds,
        redact_minutes,
    }) = body?;
    let room = room(name)?;
    let named = named(&pseudo, &subject)?;
    let chat = &api.chat;
    chat.sanction(
        &room,
        Sanction::Ban,
        named,
        seconds,
        redact_minutes,
        &Actor::SERVER,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mutes whoever holds the nickname (or the token subject) in the room for `seconds` (0 lifts it).
#[utoipa::path(post, path = "/api/rooms/{room}/mute", tag = "moderation", params(("room" = String, Path, description = "the room: 1 to 64 letters, digits, - or _")), request_body = Mute,
    responses((status = 204, description = "done"), (status = 404, description = "nobody by that nickname (kick)", body = ErrorBody), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn mute(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: Body<Mute>,
) -> Result<StatusCode, ApiError> {
    let Json(Mute {
        pseudo,
        subject,
        seconds,
    }) = body?;
    let room = room(name)?;
    let named = named(&pseudo, &subject)?;
    let chat = &api.chat;
    chat.sanction(&room, Sanction::Mute, named, seconds, 0, &Actor::SERVER)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One message per `seconds` per person in the room (0 ends it).
#[utoipa::path(post, path = "/api/rooms/{room}/slow_mode", tag = "moderation", params(("room" = String, Path, description = "the room: 1 to 64 letters, digits, - or _")), request_body = SlowMode,
    responses((status = 204, description = "done"), (status = 404, description = "nobody by that nickname (kick)", body = ErrorBody), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn slow_mode(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: Body<SlowMode>,
) -> Result<StatusCode, ApiError> {
    let Json(SlowMode { seconds }) = body?;
    let room = room(name)?;
    api.chat
        .set_slow_mode(&room, seconds, &Actor::SERVER)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a message still in the room's history: readers remove it, the
/// stored copy becomes a tombstone.
#[utoipa::path(delete, path = "/api/rooms/{room}/messages/{id}", tag = "moderation",
    params(("room" = String, Path, description = "the room: 1 to 64 letters, digits, - or _"), ("id" = Uuid, Path, description = "the message's id")),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such message in the history", body = ErrorBody), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn delete(
    State(api): State<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let room = room(name)?;
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::Invalid("the message id must be a UUID".into()))?;
    api.chat.delete(&room, id, &Actor::SERVER).await?;
    Ok(StatusCode::NO_CONTENT)
}
