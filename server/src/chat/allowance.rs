//! A chat connection's allowances: which bucket an action takes, whose
//! bucket it is, and how an action over it is answered.

use super::super::encode;
use super::ChatSession;
use crate::fanout::{close, CloseReason};
use crate::metrics;
use crate::ws::throttle::{KeyedThrottle, Verdict};
use app::protocol::{ClientMessage, ErrorCode, ServerEvent};
use std::borrow::Cow;

/// Chat actions with a bucket of their own per person
/// (`JOIN_LIMIT_PER_MIN`, `RENAME_LIMIT_PER_MIN`, and the chat rate limit
/// for the rest): each writes to the broker.
#[derive(Clone, Copy)]
pub(super) enum Limited {
    Join,
    Rename,
    Action,
}

impl Limited {
    /// The `errors_total` label.
    fn label(self) -> &'static str {
        match self {
            Limited::Join => "join_limited",
            Limited::Rename => "rename_limited",
            Limited::Action => "action_limited",
        }
    }

    /// Why a client that keeps trying is closed; its reason starts the
    /// error messages too.
    fn close(self) -> CloseReason {
        match self {
            Limited::Join => close::JOIN_FLOOD,
            Limited::Rename => close::RENAME_FLOOD,
            Limited::Action => close::RATE_LIMITED,
        }
    }
}

/// `None` when the throttle lets the key through, else its verdict.
pub(super) fn allowed(throttle: &KeyedThrottle, key: &String) -> Option<Verdict> {
    match throttle.check(key) {
        Verdict::Allowed => None,
        verdict => Some(verdict),
    }
}

impl ChatSession {
    /// Whose allowance a frame takes: the member's identity; for a join,
    /// the identity its session gives (or the token's subject); before a
    /// join (frames that are refused), this connection's.
    /// (Borrowed for a member: no allocation per frame. A `String`, not a
    /// `str`: the limiters are keyed by `String` and governor takes `&K`.)
    #[allow(clippy::owned_cow)]
    pub(super) fn rate_key(&self, message: &ClientMessage) -> Cow<'_, String> {
        match (&self.member, message) {
            (_, ClientMessage::Join { session, .. }) => {
                Cow::Owned(self.person.author_id(session.unwrap_or_default()))
            }
            (Some(member), _) => Cow::Borrowed(&member.id),
            (None, _) => Cow::Owned(self.id.to_string()),
        }
    }

    /// Answers an action over its limit; a client that keeps trying
    /// regardless is closed with 1008.
    pub(super) fn throttled(&self, verdict: Verdict, limited: Limited) -> Option<CloseReason> {
        metrics::error("chat", limited.label());
        let why = limited.close();
        let message = match verdict {
            Verdict::Refused(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                format!("{}: try again in {} s", why.reason, secs.max(1))
            }
            Verdict::Allowed | Verdict::Abuse => format!("{}: closing", why.reason),
        };
        self.peer.send(encode(&ServerEvent::Error {
            code: ErrorCode::RateLimited,
            message,
            until: None,
            retry_after_ms: None,
        }));
        (verdict == Verdict::Abuse).then_some(why)
    }
}
