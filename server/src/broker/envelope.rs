//! What travels between instances: a one-line header (origin instance,
//! excluded connection, send time) and the frame's bytes, untouched.

use crate::clock::now_us;
use crate::fanout::ConnId;
use axum::extract::ws::Utf8Bytes;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub origin: Uuid,
    pub except: Option<ConnId>,
    /// Microseconds since the Unix epoch when it was published.
    pub sent_at_us: u64,
    pub frame: Utf8Bytes,
}

impl Envelope {
    pub fn new(origin: Uuid, except: Option<ConnId>, frame: Utf8Bytes) -> Self {
        Envelope {
            origin,
            except,
            sent_at_us: now_us(),
            frame,
        }
    }

    /// How long ago it was published (clocks of one host, or NTP-synced).
    pub fn age(&self) -> Duration {
        Duration::from_micros(now_us().saturating_sub(self.sent_at_us))
    }

    pub fn encode(&self) -> Vec<u8> {
        let except = self
            .except
            .map_or_else(|| "-".to_owned(), |id| id.to_string());
        let mut bytes = format!("{} {except} {}\n", self.origin, self.sent_at_us).into_bytes();
        bytes.extend_from_slice(self.frame.as_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let newline = bytes.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&bytes[..newline]).ok()?;
        let mut fields = header.split(' ');
        let origin = fields.next()?.parse().ok()?;
        let except = match fields.next()? {
            "-" => None,
            id => Some(id.parse().ok()?),
        };
        let sent_at_us = fields.next()?.parse().ok()?;
        let frame = Utf8Bytes::try_from(bytes[newline + 1..].to_vec()).ok()?;
        Some(Envelope {
            origin,
            except,
            sent_at_us,
            frame,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        for except in [None, Some(Uuid::new_v4())] {
            let env = Envelope::new(Uuid::new_v4(), except, "{\"a\":\"x\ny\"}".into());
            assert_eq!(Envelope::decode(&env.encode()), Some(env));
        }
        assert_eq!(Envelope::decode(b"no header"), None);
        assert_eq!(Envelope::decode(b"x - 1\n{}"), None);
    }
}
