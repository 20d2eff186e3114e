//! Which pages may open a WebSocket here, against cross-site WebSocket
//! hijacking: browsers send the page's origin with every WebSocket
//! handshake and cannot lie about it, but do not apply the same-origin
//! policy to WebSockets, so any site a visitor opens could otherwise talk to
//! this server (or to a relay inside the visitor's network) as the visitor.
//!
//! A handshake without `Origin` does not come from a browser page; such
//! programs could send any `Origin` they like, so refusing them protects
//! nothing by itself. They are let in unless `CHAT_REQUIRE_ORIGIN` /
//! `RELAY_REQUIRE_ORIGIN` say otherwise.
//!
//! DNS rebinding: a site can make its own name resolve to this server (or
//! to a relay inside its visitor's network), and its pages then open
//! sockets whose `Origin` and `Host` are both its own name, so "the page's
//! origin is the request's host" proves nothing by itself. A browser's
//! handshake is therefore also checked for being addressed to a name this
//! server answers to: one of `PUBLIC_ORIGINS`, `localhost`, or an IP
//! address, which no other site can rebind.

use super::InvalidSetting;
use axum::http::header::{HOST, ORIGIN};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Uri};

/// One entry of `ALLOWED_ORIGINS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigin {
    /// The page was served by the host the socket connects to: `Origin`'s
    /// host and port are the request's `Host`.
    SameHost,
    /// Any page, from any site.
    Any,
    /// Exactly this origin, normalized (see [`normalize`]).
    Exact(String),
}

impl AllowedOrigin {
    /// Parses `self`, `*` or `scheme://host[:port]` (for clap).
    pub fn parse(value: &str) -> Result<Self, InvalidSetting> {
        match value.trim() {
            "self" => Ok(AllowedOrigin::SameHost),
            "*" => Ok(AllowedOrigin::Any),
            origin => normalize(origin)
                .map(AllowedOrigin::Exact)
                .ok_or_else(|| InvalidSetting::Origin(origin.to_owned())),
        }
    }
}

/// Why an upgrade is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A browser's handshake addressed to a name that is not this server's.
    Host,
    /// From a page whose origin is not allowed.
    Origin,
    /// Without an `Origin` header where one is required.
    NoOrigin,
}

pub struct OriginPolicy {
    allowed: Vec<AllowedOrigin>,
    require: bool,
    /// `PUBLIC_ORIGINS`, normalized: the origins this server is reached at.
    public: Vec<String>,
}

impl OriginPolicy {
    pub fn new(allowed: Vec<AllowedOrigin>, require: bool, public: &[AllowedOrigin]) -> Self {
        let public = public
            .iter()
            .filter_map(|origin| match origin {
                AllowedOrigin::Exact(origin) => Some(origin.clone()),
                _ => None,
            })
            .collect();
        OriginPolicy {
            allowed,
            require,
            public,
        }
    }

    /// True if `Host` names this server: the host of one of its public
    /// origins, `localhost`, or an IP address.
    fn own_host(&self, host: &str) -> bool {
        let Ok(authority) = host.parse::<Authority>() else {
            return false;
        };
        let name = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        name.parse::<std::net::IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || name.to_ascii_lowercase().ends_with(".localhost")
            || self
                .public
                .iter()
                .any(|origin| host_name(origin) == Some(name.to_ascii_lowercase()))
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let Some(origin) = headers.get(ORIGIN) else {
            return if self.require {
                Err(Refused::NoOrigin)
            } else {
                Ok(())
            };
        };
        // "null" (sandboxed frames, file: pages) and anything unparsable
        // match nothing but `*`.
        let origin = origin.to_str().ok().and_then(normalize);
        let host = headers.get(HOST).and_then(|h| h.to_str().ok());
        if !host.is_some_and(|host| self.own_host(host)) {
            return Err(Refused::Host);
        }
        let allowed = self.allowed.iter().any(|entry| match entry {
            AllowedOrigin::Any => true,
            AllowedOrigin::SameHost => origin.as_deref().is_some_and(|origin| {
                host.is_some_and(|host| same_host(origin, host))
                    || self.public.iter().any(|public| public == origin)
            }),
            AllowedOrigin::Exact(exact) => origin.as_deref() == Some(exact.as_str()),
        });
        if allowed {
            Ok(())
        } else {
            Err(Refused::Origin)
        }
    }
}

/// `scheme://host[:port]`, lower-cased, without the scheme's default port,
/// as browsers serialize origins; None if it is not one.
fn normalize(origin: &str) -> Option<String> {
    let uri: Uri = origin.trim_end_matches('/').parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    let has_path = uri.path_and_query().is_some_and(|p| p.as_str() != "/");
    if has_path || authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    match authority.port_u16() {
        Some(port) if Some(port) != default_port(&scheme) => {
            Some(format!("{scheme}://{host}:{port}"))
        }
        _ => Some(format!("{scheme}://{host}")),
    }
}

/// The host name of a normalized origin (any port: a name this server
/// answers to is its own on every port, the relay's included).
fn host_name(origin: &str) -> Option<String> {
    let (_, authority) = origin.split_once("://")?;
    let authority = authority.parse::<Authority>().ok()?;
    Some(authority.host().to_ascii_lowercase())
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// True if a normalized origin names the same host and port as `Host`. A
/// port missing from either is the origin scheme's default (behind a TLS
/// proxy the page is https on 443 and `Host` has no port).
fn same_host(origin: &str, host: &str) -> bool {
    let Some((scheme, origin_authority)) = origin.split_once("://") else {
        return false;
    };
    let (Ok(origin_authority), Ok(host)) = (
        origin_authority.parse::<Authority>(),
        host.parse::<Authority>(),
    ) else {
        return false;
    };
    let default = default_port(scheme);
    origin_authority.host().eq_ignore_ascii_case(host.host())
        && origin_authority.port_u16().or(default) == host.port_u16().or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    fn policy(entries: &[&str], require: bool) -> OriginPolicy {
        let allowed = entries
            .iter()
            .map(|e| AllowedOrigin::parse(e).unwrap())
            .collect();
        let public = [AllowedOrigin::parse("https://chat.example.com").unwrap()];
        OriginPolicy::new(allowed, require, &public)
    }

    #[test]
    fn a_rebound_name_is_refused_while_the_servers_own_names_work() {
        let own = policy(&["self"], false);
        assert_eq!(
            own.check(&headers(
                Some("http://rebind.evil.example:8080"),
                "rebind.evil.example:8080"
            )),
            Err(Refused::Host)
        );
        for (origin, host) in [
            ("http://localhost:4100", "localhost:4100"),
            ("http://127.0.0.1:4100", "127.0.0.1:4100"),
            ("http://[::1]:4100", "[::1]:4100"),
            ("https://chat.example.com", "chat.example.com"),
        ] {
            assert_eq!(own.check(&headers(Some(origin), host)), Ok(()), "{host}");
        }
        // A program (no Origin) may use any name: it cannot be a rebound page.
        assert_eq!(own.check(&headers(None, "relay.internal:8080")), Ok(()));
        // The public page may open the relay on its own port.
        assert_eq!(
            own.check(&headers(
                Some("https://chat.example.com"),
                "chat.example.com:8080"
            )),
            Ok(())
        );
    }

    #[test]
    fn by_default_only_the_servers_own_pages() {
        let own = policy(&["self"], false);
        for (origin, host) in [
            ("http://127.0.0.1:4100", "127.0.0.1:4100"),
            ("https://Chat.Example.com", "chat.example.com"),
            ("https://chat.example.com", "chat.example.com:443"),
            ("http://[::1]:8080", "[::1]:8080"),
            ("http://localhost:4100", "localhost:4100"),
        ] {
            assert_eq!(own.check(&headers(Some(origin), host)), Ok(()), "{origin}");
        }
        for (origin, host) in [
            ("https://evil.example", "chat.example.com"),
            ("http://127.0.0.1:9999", "127.0.0.1:4100"),
            ("http://chat.example.com.evil.example", "chat.example.com"),
            ("null", "chat.example.com"),
        ] {
            assert_eq!(
                own.check(&headers(Some(origin), host)),
                Err(Refused::Origin),
                "{origin}"
            );
        }
    }

    #[test]
    fn a_list_a_wildcard_and_a_missing_origin() {
        let list = policy(
            &["https://chat.example.com", "http://x.example:8000/"],
            false,
        );
        let host = "10.0.0.5:4100";
        assert_eq!(
            list.check(&headers(Some("https://chat.example.com"), host)),
            Ok(())
        );
        assert_eq!(
            list.check(&headers(Some("http://x.example:8000"), host)),
            Ok(())
        );
        assert_eq!(
            list.check(&headers(Some("http://x.example"), host)),
            Err(Refused::Origin)
        );
        // Listing other origins does not include the server's own pages.
        assert_eq!(
            list.check(&headers(Some("http://10.0.0.5:4100"), host)),
            Err(Refused::Origin)
        );
        assert_eq!(list.check(&headers(None, host)), Ok(()));
        assert_eq!(
            policy(&["self"], true).check(&headers(None, host)),
            Err(Refused::NoOrigin)
        );
        assert_eq!(
            policy(&["*"], false).check(&headers(Some("null"), host)),
            Ok(())
        );
    }

    #[test]
    fn entries_must_be_origins() {
        for bad in ["chat.example.com", "https://x/path", "https://u@x", ""] {
            assert!(AllowedOrigin::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            AllowedOrigin::parse("HTTPS://X.example:443").unwrap(),
            AllowedOrigin::Exact("https://x.example".into())
        );
    }
}
