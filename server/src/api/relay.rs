//! The relay for the backend: a frame to every client of an action.

use super::{Api, ApiError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::de::IgnoredAny;
use std::sync::Arc;

/// Forwards the body, a JSON value, byte for byte to every relay client of
/// the action on every instance.
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
