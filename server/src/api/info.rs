//! `GET /api/info`: the deployment as the broker sees it.

use super::{Api, ApiError, ErrorBody};
use crate::broker::{InstanceEntry, Mode};
use crate::clock::now_ms;
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct Info {
    /// The instance that answered.
    instance: Uuid,
    version: &'static str,
    /// `memory` (embedded), `redis` or `cluster`.
    mode: &'static str,
    /// Every instance that wrote its line in the last 15 s (each does
    /// every 5 s), this one first.
    #[schema(value_type = Vec<Object>)]
    instances: Vec<InstanceEntry>,
}

/// The live instances with their connections, the version and the broker
/// mode.
#[utoipa::path(get, path = "/api/info", tag = "deployment", responses((status = 200, body = Info), (status = 400, description = "invalid", body = ErrorBody), (status = 401, description = "no or wrong key", body = ErrorBody), (status = 503, description = "the broker does not answer", body = ErrorBody)))]
pub async fn info(State(api): State<Arc<Api>>) -> Result<Json<Info>, ApiError> {
    let relay = &api.relay;
    let here = InstanceEntry::of(relay.instance, api.started, &relay.hub);
    let mut instances = relay.broker.instances(now_ms()).await?;
    // This one's own line is the freshest.
    instances.retain(|line| line.id != here.id);
    instances.sort_by_key(|line| line.id);
    instances.insert(0, here);
    let mode = match relay.broker.mode() {
        Mode::Memory => "memory",
        Mode::Redis => "redis",
        Mode::Cluster => "cluster",
    };
    Ok(Json(Info {
        instance: relay.instance,
        version: env!("CARGO_PKG_VERSION"),
        mode,
        instances,
    }))
}
