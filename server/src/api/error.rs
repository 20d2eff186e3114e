//! The API's errors: a stable code, a message that says what to change, and
//! the HTTP status that fits.

use crate::broker::BrokerError;
use crate::chat::moderation::Denied;
use app::protocol::ErrorCode;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub enum ApiError {
    /// 401: no key, a wrong key, or a caller elsewhere without a key.
    Unauthorized(String),
    /// 400: the body or a parameter is not what the call takes.
    Invalid(String),
    /// 404: no such call, message or participant.
    NotFound(String),
    /// 403: the action is not allowed (editing someone's message).
    Forbidden(String),
    /// 503: the broker does not answer.
    Unavailable(String),
    /// 409: the message id is another author's.
    Conflict(String),
    /// 403 from the admin port's Host check (DNS rebinding).
    MisdirectedHost(String),
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::Invalid(rejection.body_text())
    }
}

impl From<BrokerError> for ApiError {
    fn from(err: BrokerError) -> Self {
        ApiError::Unavailable(format!("{err}: try again in a moment"))
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        match denied.code {
            ErrorCode::NotFound => ApiError::NotFound(denied.message),
            ErrorCode::Forbidden => ApiError::Forbidden(denied.message),
            ErrorCode::Unavailable => ApiError::Unavailable(denied.message),
            _ => ApiError::Invalid(denied.message),
        }
    }
}

/// What every error answers.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// `unauthorized`, `invalid`, `not_found`, `forbidden`, `unavailable`,
    /// `conflict` or `wrong_host`.
    error: &'static str,
    /// What to change.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m),
            ApiError::Invalid(m) => (StatusCode::BAD_REQUEST, "invalid", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::MisdirectedHost(m) => (StatusCode::FORBIDDEN, "wrong_host", m),
        };
        let body = ErrorBody {
            error: code,
            message,
        };
        (status, Json(body)).into_response()
    }
}
