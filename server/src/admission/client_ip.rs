//! The address a connection is counted against: the TCP peer, or, behind a
//! reverse proxy that says so in `TRUSTED_PROXY_HEADER`, the client's
//! address as that proxy saw it. The header is believed only when the TCP
//! peer is one of `TRUSTED_PROXIES`: anybody else could write any address in
//! it and dodge the per-address limit.

use super::InvalidSetting;
use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// `TRUSTED_PROXY_HEADER`: a header name, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader(Option<HeaderName>);

impl ProxyHeader {
    /// Parses `none` or a header name (for clap).
    pub fn parse(value: &str) -> Result<Self, InvalidSetting> {
        if value.eq_ignore_ascii_case("none") {
            return Ok(ProxyHeader(None));
        }
        HeaderName::try_from(value)
            .map(|name| ProxyHeader(Some(name)))
            .map_err(|_| InvalidSetting::Header(value.to_owned()))
    }
}

/// Parses an address or a CIDR range (for clap).
pub fn parse_net(value: &str) -> Result<IpNet, InvalidSetting> {
    let value = value.trim();
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| InvalidSetting::Network(value.to_owned()))
}

pub struct ClientIp {
    header: Option<HeaderName>,
    proxies: Vec<IpNet>,
}

impl ClientIp {
    pub fn new(header: ProxyHeader, proxies: Vec<IpNet>) -> Self {
        ClientIp {
            header: header.0,
            proxies,
        }
    }

    /// No proxy believed: every peer is its own client (the admin port).
    pub fn direct() -> Self {
        ClientIp {
            header: None,
            proxies: Vec::new(),
        }
    }

    /// Whether `peer` is a proxy whose forwarded addresses are believed.
    pub fn is_proxy(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.header.is_some() && self.proxies.iter().any(|net| net.contains(&peer))
    }

    /// The client's address for a request from `peer`.
    pub fn of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        let Some(header) = self.header.as_ref().filter(|_| self.is_proxy(peer)) else {
            return peer;
        };
        // The right-most address is the one our proxy added; those left of
        // it came with the request and may be made up.
        headers
            .get_all(header)
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|list| list.rsplit(',').next())
            .and_then(|last| parse_address(last.trim()))
            .map_or(peer, |ip| ip.to_canonical())
    }
}

/// `1.2.3.4`, `2001:db8::1`, or either with a port (`1.2.3.4:5`, `[2001:db8::1]:5`).
fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_peer_unless_a_trusted_proxy_says_otherwise() {
        let loopback = "127.0.0.1".parse().unwrap();
        let stranger = "203.0.113.7".parse().unwrap();
        let headers = forwarded(&["1.1.1.1, 10.0.0.9"]);
        let off = ClientIp::new(ProxyHeader::parse("none").unwrap(), vec![]);
        assert_eq!(off.of(loopback, &headers), loopback);

        let proxies = vec![
            parse_net("127.0.0.1").unwrap(),
            parse_net("10.1.0.0/16").unwrap(),
        ];
        let on = ClientIp::new(ProxyHeader::parse("X-Forwarded-For").unwrap(), proxies);
        let nine: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(on.of(loopback, &headers), nine);
        assert_eq!(on.of("10.1.2.3".parse().unwrap(), &headers), nine);
        assert_eq!(on.of(stranger, &headers), stranger, "not a trusted proxy");
        assert_eq!(on.of(loopback, &HeaderMap::new()), loopback);
        assert_eq!(on.of(loopback, &forwarded(&["garbage"])), loopback);
        // Several header lines: the last one is our proxy's.
        assert_eq!(on.of(loopback, &forwarded(&["6.6.6.6", "10.0.0.9"])), nine);
        assert_eq!(
            on.of(loopback, &forwarded(&["[2001:db8::1]:443"])),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        // An IPv4 peer seen through an IPv6 socket is the IPv4 address.
        assert_eq!(
            off.of("::ffff:127.0.0.1".parse().unwrap(), &headers),
            loopback
        );
    }
}
