//! The admin port answers only requests addressed to it by a name it
//! knows: an IP address, `localhost`, or a name in `ADMIN_HOSTS`. A page in
//! the operator's browser that rebinds its own DNS name to this machine
//! (DNS rebinding) sends its own name as `Host` and is refused, with or
//! without `API_KEY`. A cross-site request with an IP address as `Host`
//! cannot send the API's JSON bodies without the browser's preflight,
//! which the admin port never answers.

use crate::api::ApiError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;

/// The names the admin port is known by, besides addresses and
/// `localhost` (`ADMIN_HOSTS`), lower case.
#[derive(Debug, Clone, Default)]
pub struct AdminHosts(pub Vec<String>);

impl AdminHosts {
    pub fn allows(&self, host: &str) -> bool {
        let name = without_port(host).to_ascii_lowercase();
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || self.0.iter().any(|known| known.eq_ignore_ascii_case(&name))
    }
}

/// `host[:port]` or `[v6][:port]` without its port.
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        // One colon: a port; more: a bare IPv6 address.
        Some((name, _)) if !name.contains(':') => name,
        _ => host,
    }
}

pub async fn check(State(hosts): State<Arc<AdminHosts>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().host());
    match host {
        Some(host) if !hosts.allows(host) => {
            crate::metrics::connection_refused("admin", "host");
            ApiError::MisdirectedHost(format!(
                "the admin port does not answer to the name {host:?} (DNS rebinding?): use its address, localhost, or add the name to ADMIN_HOSTS"
            ))
            .into_response()
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_localhost_and_configured_names_only() {
        let hosts = AdminHosts(vec!["admin.internal".into()]);
        for allowed in [
            "127.0.0.1:9100",
            "127.0.0.1",
            "[::1]:9100",
            "::1",
            "10.1.2.3:9100",
            "localhost:9100",
            "LOCALHOST",
            "admin.internal:9100",
            "Admin.Internal",
        ] {
            assert!(hosts.allows(allowed), "{allowed}");
        }
        for refused in [
            "evil.example",
            "evil.example:9100",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
    }
}
