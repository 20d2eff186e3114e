//! `POST /api/batch`: several calls in order, one answer each, through the
//! same handlers as the calls one by one.

use super::{calls, Api, ApiError, ErrorBody};
use axum::body::{to_bytes, Body};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, Method, Request};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;
use utoipa::ToSchema;

/// Calls in one batch at most.
const MAX_CALLS: usize = 100;
/// The largest answer a call of a batch may give (histories are the
/// largest: 100 events).
const MAX_ANSWER_BYTES: usize = 4 << 20;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    calls: Vec<Call>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Call {
    method: String,
    /// The call's path and query, e.g. `/api/rooms/general/messages`.
    path: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    body: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Results {
    results: Vec<Answer>,
}

#[derive(Serialize, ToSchema)]
struct Answer {
    status: u16,
    /// The answer's JSON, null when it had none.
    #[schema(value_type = Object)]
    body: Value,
}

/// Up to 100 calls in order, through the same handlers; one answer each.
#[utoipa::path(post, path = "/api/batch", tag = "batch", request_body = Batch, responses((status = 200, body = Results), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn batch(
    State(api): State<Arc<Api>>,
    body: Result<Json<Batch>, JsonRejection>,
) -> Result<Json<Results>, ApiError> {
    let Json(Batch { calls: batch }) = body?;
    if batch.len() > MAX_CALLS {
        return Err(ApiError::Invalid(format!(
            "a batch holds at most {MAX_CALLS} calls"
        )));
    }
    let (router, _) = calls().split_for_parts();
    let router = router
        .fallback(|| async { ApiError::NotFound("no such API call".into()) })
        .with_state(api);
    let mut results = Vec::with_capacity(batch.len());
    for call in batch {
        let method = Method::from_bytes(call.method.to_uppercase().as_bytes())
            .map_err(|_| ApiError::Invalid(format!("{:?} is not an HTTP method", call.method)))?;
        // Not a batch in a batch, nor a backup (a file, not a JSON answer).
        let held = ["/api/batch", "/api/backup"];
        if held.iter().any(|p| call.path.starts_with(p)) || !call.path.starts_with("/api/") {
            return Err(ApiError::Invalid(format!(
                "{:?} is not an API call that a batch can hold",
                call.path
            )));
        }
        let body = call
            .body
            .map_or_else(Body::empty, |json| Body::from(json.to_string()));
        let request = Request::builder()
            .method(method)
            .uri(&call.path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|err| ApiError::Invalid(format!("{:?}: {err}", call.path)))?;
        // The router's error type is Infallible.
        let Ok(response) = router.clone().oneshot(request).await;
        let status = response.status().as_u16();
        let bytes = to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|err| ApiError::Unavailable(format!("an answer could not be read: {err}")))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        results.push(Answer { status, body });
    }
    Ok(Json(Results { results }))
}
