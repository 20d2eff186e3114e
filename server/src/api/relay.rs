//! The relay for the backend: a frame to every client of an action.

use super::{Api, ApiError, ErrorBody};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::de::IgnoredAny;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use utoipa::ToSchema;
use uuid::Uuid;

/// Forwards the body, a JSON value, byte for byte to every relay client of
/// the action on every instance.
#[utoipa::path(post, path = "/api/actions/{action}/frames", tag = "relay",
    params(("action" = String, Path, description = "the relay action")),
    request_body(content = Object, description = "any JSON value, forwarded byte for byte"),
    responses((status = 202, description = "sent"), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn frames(
    State(api): State<Arc<Api>>,
    Path(action): Path<String>,
    body: String,
) -> Result<StatusCode, ApiError> {
    if action.is_empty() {
        return Err(ApiError::Invalid("the action must not be empty".into()));
    }
    serde_json::from_str::<IgnoredAny>(&body)
        .map_err(|err| ApiError::Invalid(format!("the body must be JSON: {err}")))?;
    api.relay.forward(&action, body.into()).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Serialize, ToSchema)]
pub struct Clients {
    clients: Vec<Client>,
}

#[derive(Serialize, ToSchema)]
struct Client {
    id: Uuid,
    /// Its registration message (its first JSON frame; with tokens, the
    /// token's `sub` instead of the token).
    #[schema(value_type = Object)]
    registration: Value,
    /// The instance it is connected to.
    instance: Uuid,
}

/// The registered relay clients of the action on every instance (a
/// crashed instance's until its entries expire).
#[utoipa::path(get, path = "/api/actions/{action}/clients", tag = "relay",
    params(("action" = String, Path, description = "the relay action")),
    responses((status = 200, body = Clients), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn clients(
    State(api): State<Arc<Api>>,
    Path(action): Path<String>,
) -> Result<Json<Clients>, ApiError> {
    let listed = api.relay.broker.relay_clients(&action).await?;
    let clients = listed
        .into_iter()
        .map(|client| Client {
            id: client.id,
            registration: serde_json::from_str(&client.registration).unwrap_or(Value::Null),
            instance: client.instance,
        })
        .collect();
    Ok(Json(Clients { clients }))
}
