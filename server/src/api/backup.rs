//! `GET /api/backup`: a consistent copy of the embedded default's data
//! file, taken while the server runs (no other process may open the file
//! meanwhile), sent as it is written to disk.

use super::{Api, ApiError, ErrorBody};
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio_util::io::ReaderStream;

/// A copy of the rooms' data file (`rooms.redb`) as of the call: history,
/// sanctions, slow mode and webhook cursors. Start a server on it by
/// putting it in a DATA_DIR as `rooms.redb`. With Redis, back up Redis.
#[utoipa::path(get, path = "/api/backup", tag = "deployment", responses((status = 200, description = "the copy, a redb file", content_type = "application/octet-stream"), (status = 400, description = "this deployment keeps no data file (Redis, or DATA_DIR=memory)", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the copy could not be written", body = ErrorBody)))]
pub async fn backup(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let Some(copy) = api.relay.broker.backup().await? else {
        return Err(ApiError::Invalid(
            "this deployment keeps no data file: with Redis, back up Redis; with DATA_DIR=memory there is nothing on disk".into(),
        ));
    };
    let body = Body::from_stream(ReaderStream::new(tokio::fs::File::from_std(copy)));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"rooms.redb\"",
            ),
        ],
        body,
    )
        .into_response())
}
