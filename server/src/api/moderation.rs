//! Moderation by the backend: the moderation frames' actions, taken by
//! "server" (allowed with or without chat access tokens: the backend is
//! trusted; it cannot edit anyone's message).

use super::rooms::room;
use super::{Api, ApiError};
use crate::broker::Sanction;
use crate::chat::moderation::Actor;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use uuid::Uuid;

type Body<T> = Result<Json<T>, JsonRejection>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kick {
    pseudo: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    pseudo: String,
    seconds: u64,
    #[serde(default)]
    redact_minutes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mute {
    pseudo: String,
    seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowMode {
    seconds: u64,
}

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

pub async fn ban(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: Body<Ban>,
) -> Result<StatusCode, ApiError> {
    let Json(Ban {
        pseudo,
        seconds,
        redact_minutes,
    }) = body?;
    let room = room(name)?;
    let chat = &api.chat;
    chat.sanction(
        &room,
        Sanction::Ban,
        &pseudo,
        seconds,
        redact_minutes,
        &Actor::SERVER,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn mute(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: Body<Mute>,
) -> Result<StatusCode, ApiError> {
    let Json(Mute { pseudo, seconds }) = body?;
    let room = room(name)?;
    let chat = &api.chat;
    chat.sanction(&room, Sanction::Mute, &pseudo, seconds, 0, &Actor::SERVER)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

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
