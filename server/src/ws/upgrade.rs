//! The WebSocket opening handshake (RFC 6455, section 4.2), taken from
//! hyper directly: the connection then gets the raw TCP stream
//! ([`super::conn`]).

use axum::extract::FromRequestParts;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper::upgrade::OnUpgrade;
use sha1::{Digest, Sha1};

/// A request to open a WebSocket, checked.
pub struct Upgrade {
    key: HeaderValue,
    pub(super) on_upgrade: OnUpgrade,
}

/// Why a request cannot be a WebSocket opening (the statuses axum gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAnUpgrade {
    MethodNotGet,
    ConnectionHeader,
    UpgradeHeader,
    Version,
    KeyMissing,
    NotUpgradable,
}

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        let (status, why) = match self {
            NotAnUpgrade::MethodNotGet => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Request method must be `GET`",
            ),
            NotAnUpgrade::ConnectionHeader => (
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            ),
            NotAnUpgrade::UpgradeHeader => (
                StatusCode::BAD_REQUEST,
                "`Upgrade` header did not include 'websocket'",
            ),
            NotAnUpgrade::Version => (
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` header did not include '13'",
            ),
            NotAnUpgrade::KeyMissing => (
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` header missing",
            ),
            NotAnUpgrade::NotUpgradable => (
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ),
        };
        (status, why).into_response()
    }
}

/// Whether a comma-separated header holds `token` (ASCII case ignored).
fn lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, NotAnUpgrade> {
        if parts.method != Method::GET {
            return Err(NotAnUpgrade::MethodNotGet);
        }
        if !lists(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(NotAnUpgrade::ConnectionHeader);
        }
        if !lists(&parts.headers, header::UPGRADE, "websocket") {
            return Err(NotAnUpgrade::UpgradeHeader);
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13"))
        {
            return Err(NotAnUpgrade::Version);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(NotAnUpgrade::KeyMissing)?
            .clone();
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(NotAnUpgrade::NotUpgradable)?;
        Ok(Upgrade { key, on_upgrade })
    }
}

impl Upgrade {
    /// The `101 Switching Protocols` answer.
    pub(super) fn response(&self) -> Response {
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            accept_key(self.key.as_bytes()),
        );
        response
    }
}

/// `Sec-WebSocket-Accept`: the key with the protocol's GUID, hashed.
fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let encoded = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    HeaderValue::from_str(&encoded).expect("base64 is a header value")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_accept_key_is_the_rfc_example() {
        // RFC 6455, section 1.3.
        let key = super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
