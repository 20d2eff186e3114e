//! This process's connections, grouped by topic, and the fan-out of a
//! frame to them: the [`Hub`] queues the same bytes for every listener of
//! a topic, never waiting on one ([`Peer`]: a bounded queue per
//! connection, closed through it).

mod hub;
mod peer;

pub use crate::kind::Kind;
pub use hub::Hub;
pub use peer::{Peer, Queue, Watched};
use uuid::Uuid;

pub type ConnId = Uuid;

use std::sync::Arc;

/// Where a frame goes. Rooms and actions live in separate namespaces, so a
/// relay action named like a chat room never sees chat traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    // Shared: each connection, its subscription and the hub hold the name,
    // and a clone is a count, not a copy.
    Room(Arc<str>),
    Action(Arc<str>),
}

impl Topic {
    /// The room's or the action's name.
    pub fn name(&self) -> &str {
        match self {
            Topic::Room(name) | Topic::Action(name) => name,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Topic::Room(_) => Kind::Chat,
            Topic::Action(_) => Kind::Relay,
        }
    }
}

/// Why the server closes a connection: the close frame's code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

/// WebSocket close codes and reasons this server uses.
pub mod close {
    use super::CloseReason;

    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    /// Frames that break RFC 6455 (unmasked, reserved bits or opcodes, ...).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The connection's nickname went to a member of another instance
    /// (taken on both while the broker was away).
    pub const NICKNAME_CONFLICT: u16 = 4409;
    /// The same session took the nickname on a newer connection.
    pub const REPLACED_CODE: u16 = 4001;
    /// A moderator removed the participant (kick or ban).
    pub const REMOVED_CODE: u16 = 4003;

    const fn reason(code: u16, reason: &'static str) -> CloseReason {
        CloseReason { code, reason }
    }

    /// What a connection closed without a reason reports.
    pub const CLOSED: CloseReason = reason(NORMAL, "closed");
    pub const CLIENT_CLOSED: CloseReason = reason(NORMAL, "client closed");
    pub const PING_TIMEOUT: CloseReason = reason(GOING_AWAY, "ping timeout");
    pub const NOT_UTF8: CloseReason = reason(INVALID_DATA, "text frame is not UTF-8");
    pub const PROTOCOL_VIOLATION: CloseReason = reason(PROTOCOL_ERROR, "protocol violation");
    pub const TOO_LARGE: CloseReason = reason(TOO_BIG, "message too big");
    pub const RATE_LIMITED: CloseReason = reason(POLICY, "rate limit exceeded");
    pub const SHUTDOWN: CloseReason = reason(RESTART, "service restart");
    pub const SLOW_CONSUMER: CloseReason =
        reason(TRY_AGAIN_LATER, "slow consumer: outbound queue full");
    pub const JOIN_FLOOD: CloseReason = reason(POLICY, "too many join attempts");
    pub const RENAME_FLOOD: CloseReason = reason(POLICY, "too many nickname changes");
    pub const NICKNAME_LOST: CloseReason =
        reason(NICKNAME_CONFLICT, "nickname taken on another instance");
    pub const REPLACED: CloseReason = reason(REPLACED_CODE, "replaced by a newer connection");
    pub const KICKED: CloseReason = reason(REMOVED_CODE, "kicked");
    pub const BANNED: CloseReason = reason(REMOVED_CODE, "banned");
    pub const DISCONNECTED: CloseReason = reason(REMOVED_CODE, "disconnected by the server");
    pub const REGISTRATION_REFUSED: CloseReason = reason(POLICY, "registration refused");
    pub const TOKEN_REFUSED: CloseReason = reason(POLICY, "access token refused");
}
