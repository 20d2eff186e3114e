//! Which other instances follow each relay action this instance follows,
//! so that a frame is published only when another instance has a client of
//! its action, and a frame that fewer instances received than follow it is
//! noticed (`PUBLISH` answers how many subscribers got it).
//!
//! The instances tell each other on the action's own channel:
//!
//! - `hello`: "I follow it now", sent once subscribed. Every subscriber
//!   answers, addressed to the sender: `here` if it follows the action,
//!   `bye` if it is letting go of it. The sender waits for as many answers
//!   as `PUBLISH` counted other subscribers, so it knows every other
//!   follower before its client hears `registered`; and each of them knew
//!   of it before answering, so none skips a frame meant for that client.
//! - `bye`: "I no longer follow it", answered the same way; the instance
//!   unsubscribes once the answers came, so that no frame published
//!   meanwhile counts it as a follower that missed it.
//!
//! Each message carries the sender's sequence number: a `bye` overtaken by
//! a later `hello` (both sent from different tasks) changes nothing.
//! Until an instance's `hello` was answered (or after its link to Redis was
//! lost), it publishes every frame: not knowing who listens is not knowing
//! that nobody does. Instances that died without a `bye` are dropped once
//! they leave the directory of live instances.

use super::client::{publish_command, Commands};
use super::keys::Keys;
use super::presence::RedisPresence;
use crate::broker::LinkStatus;
use crate::clock::now_ms;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::timeout;
use uuid::Uuid;

/// How long a `hello` waits for its answers (an instance that does not
/// answer in time is dead or stuck; the frames are published meanwhile).
const ANSWERS_WAIT: Duration = Duration::from_secs(2);
/// How often the followers of dead instances are dropped, and the lists
/// that are not known are asked for again.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// A message between instances about an action, on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Hello {
        from: Uuid,
        seq: u64,
    },
    /// Follows (`follows`) or not, possibly answering `to`'s hello `nonce`.
    State {
        from: Uuid,
        seq: u64,
        follows: bool,
        answers: Option<(Uuid, u64)>,
    },
}

impl Notice {
    /// Notices start with `!`, which no envelope does (it starts with a UUID).
    pub fn decode(bytes: &[u8]) -> Option<Notice> {
        let text = std::str::from_utf8(bytes.strip_prefix(b"!")?).ok()?;
        let mut fields = text.split(' ');
        let kind = fields.next()?;
        let from = fields.next()?.parse().ok()?;
        let seq = fields.next()?.parse().ok()?;
        let answers = match (fields.next(), fields.next()) {
            (Some(to), Some(nonce)) => Some((to.parse().ok()?, nonce.parse().ok()?)),
            (None, None) => None,
            _ => return None,
        };
        match (kind, answers) {
            ("hello", None) => Some(Notice::Hello { from, seq }),
            ("here" | "bye", answers) => Some(Notice::State {
                from,
                seq,
                follows: kind == "here",
                answers,
            }),
            _ => None,
        }
    }

    pub fn encode(&self) -> String {
        match self {
            Notice::Hello { from, seq } => format!("!hello {from} {seq}"),
            Notice::State {
                from,
                seq,
                follows,
                answers,
            } => {
                let kind = if *follows { "here" } else { "bye" };
                match answers {
                    Some((to, nonce)) => format!("!{kind} {from} {seq} {to} {nonce}"),
                    None => format!("!{kind} {from} {seq}"),
                }
            }
        }
    }
}

/// What this instance knows of the other followers of one action.
#[derive(Default)]
struct Followers {
    /// Each other instance heard from: the last sequence number heard, and
    /// whether it follows the action.
    heard: HashMap<Uuid, (u64, bool)>,
    /// The `hello` whose answers make the list complete, once they came.
    hello: Option<u64>,
    known: bool,
}

/// A `hello` waiting for its answers.
struct Waiting {
    answers: usize,
    /// Known once `PUBLISH` answered.
    expected: Option<usize>,
    done: Option<oneshot::Sender<()>>,
}

impl Waiting {
    fn settle(&mut self) {
        if self
            .expected
            .is_some_and(|expected| self.answers >= expected)
        {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
    }
}

#[derive(Default)]
struct State {
    seq: u64,
    actions: HashMap<String, Followers>,
    waiting: HashMap<u64, Waiting>,
}

impl State {
    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

pub struct Interest {
    conn: Commands,
    keys: Keys,
    instance: Uuid,
    state: Mutex<State>,
}

impl Interest {
    pub fn new(conn: Commands, keys: Keys, instance: Uuid) -> Arc<Self> {
        Arc::new(Interest {
            conn,
            keys,
            instance,
            state: Mutex::default(),
        })
    }

    /// The instance follows the action from now on (its other followers
    /// unknown until [`Interest::hello`] is answered).
    pub fn follow(&self, action: &str) {
        let mut state = self.state.lock();
        state.actions.entry(action.to_owned()).or_default();
    }

    /// The instance lets go of the action: the `bye` to send before
    /// unsubscribing.
    pub fn unfollow(&self, action: &str) -> Notice {
        let mut state = self.state.lock();
        state.actions.remove(action);
        Notice::State {
            from: self.instance,
            seq: state.next(),
            follows: false,
            answers: None,
        }
    }

    /// How many other instances are known to follow the action, and
    /// whether that is all of them (its `hello` was answered); `None` when
    /// this instance does not follow it.
    pub fn others(&self, action: &str) -> Option<(usize, bool)> {
        let state = self.state.lock();
        let followers = state.actions.get(action)?;
        let count = followers.heard.values().filter(|(_, f)| *f).count();
        Some((count, followers.known))
    }

    /// Says `hello` on the action's channel and waits (briefly) for every
    /// other subscriber's answer; the list of followers is then complete.
    pub async fn hello(&self, action: &str) {
        let seq = {
            let mut state = self.state.lock();
            let seq = state.next();
            let Some(followers) = state.actions.get_mut(action) else {
                return;
            };
            followers.hello = Some(seq);
            followers.known = false;
            seq
        };
        let hello = Notice::Hello {
            from: self.instance,
            seq,
        };
        let complete = self.ask(action, &hello, seq).await;
        let mut state = self.state.lock();
        if let Some(followers) = state.actions.get_mut(action) {
            if complete && followers.hello == Some(seq) {
                followers.known = true;
            }
        }
    }

    /// Says `bye` (from [`Interest::unfollow`]) and waits (briefly) until
    /// every other subscriber has taken it in: only then may this instance
    /// unsubscribe, or a frame published meanwhile would count it as a
    /// follower that missed it.
    pub async fn bye(&self, action: &str, bye: Notice) {
        let Notice::State { seq, .. } = bye else {
            return;
        };
        self.ask(action, &bye, seq).await;
    }

    /// Publishes a notice that every other subscriber answers, and waits
    /// for the answers; whether they all came.
    async fn ask(&self, action: &str, notice: &Notice, seq: u64) -> bool {
        let (done, answered) = oneshot::channel();
        let waiting = Waiting {
            answers: 0,
            expected: None,
            done: Some(done),
        };
        self.state.lock().waiting.insert(seq, waiting);
        let complete = match self.send(action, notice).await {
            // Every subscriber but this instance answers.
            Ok(subscribers) => {
                if let Some(waiting) = self.state.lock().waiting.get_mut(&seq) {
                    waiting.expected = Some(subscribers.saturating_sub(1));
                    waiting.settle();
                }
                matches!(timeout(ANSWERS_WAIT, answered).await, Ok(Ok(())))
            }
            Err(err) => {
                tracing::debug!(action, error = %err, "cannot tell the other instances");
                false
            }
        };
        self.state.lock().waiting.remove(&seq);
        complete
    }

    /// Takes in a notice heard on the action's channel; returns the answer
    /// to send, if it calls for one.
    pub fn heard(&self, action: &str, notice: Notice) -> Option<Notice> {
        let (from, seq, follows) = match notice {
            Notice::Hello { from, seq } => (from, seq, true),
            Notice::State {
                from, seq, follows, ..
            } => (from, seq, follows),
        };
        if from == self.instance {
            return None;
        }
        let mut state = self.state.lock();
        if let Some(followers) = state.actions.get_mut(action) {
            let entry = followers.heard.entry(from).or_insert((0, false));
            if seq > entry.0 {
                *entry = (seq, follows);
            }
        }
        match notice {
            // A `hello`, or a `bye` (a state that answers nobody): both
            // are answered.
            Notice::Hello { seq: nonce, .. }
            | Notice::State {
                seq: nonce,
                answers: None,
                ..
            } => {
                let follows = state.actions.contains_key(action);
                Some(Notice::State {
                    from: self.instance,
                    seq: state.next(),
                    follows,
                    answers: Some((from, nonce)),
                })
            }
            Notice::State {
                answers: Some((to, nonce)),
                ..
            } if to == self.instance => {
                if let Some(waiting) = state.waiting.get_mut(&nonce) {
                    waiting.answers += 1;
                    waiting.settle();
                }
                None
            }
            Notice::State { .. } => None,
        }
    }

    /// Forgets the instances that are not in the directory of live ones.
    pub fn prune(&self, live: &HashSet<Uuid>) {
        let mut state = self.state.lock();
        for followers in state.actions.values_mut() {
            followers
                .heard
                .retain(|instance, _| live.contains(instance));
        }
    }

    /// The actions followed whose other followers are not known.
    pub fn unknown(&self) -> Vec<String> {
        let state = self.state.lock();
        let unknown = state.actions.iter().filter(|(_, f)| !f.known);
        unknown.map(|(action, _)| action.clone()).collect()
    }

    /// Forgets that the followers were known (the link to Redis was lost:
    /// notices may have been missed); returns the actions followed.
    pub fn forget(&self) -> Vec<String> {
        let mut state = self.state.lock();
        for followers in state.actions.values_mut() {
            followers.known = false;
        }
        state.actions.keys().cloned().collect()
    }

    /// Drops dead instances and asks again for the followers that are not
    /// known, until the instance stops (supervised).
    pub async fn run(self: Arc<Self>, presence: RedisPresence, status: Arc<LinkStatus>) {
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if !status.is_up() {
                continue;
            }
            if let Ok(instances) = presence.instances(now_ms()).await {
                let live: HashSet<Uuid> = instances.iter().map(|entry| entry.id).collect();
                // A directory without this instance's own line is not
                // complete yet (Redis lost its data): it proves nothing.
                if live.contains(&self.instance) {
                    self.prune(&live);
                }
            }
            for action in self.unknown() {
                let interest = self.clone();
                tokio::spawn(async move { interest.hello(&action).await });
            }
        }
    }

    /// Publishes a notice on the action's channel; returns how many
    /// subscribers got it.
    pub async fn send(&self, action: &str, notice: &Notice) -> redis::RedisResult<usize> {
        let topic = crate::fanout::Topic::Action(action.into());
        redis::cmd(publish_command(&self.conn))
            .arg(self.keys.channel(&topic))
            .arg(notice.encode())
            .query_async(&mut self.conn.clone())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_garbage_is_not_one() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for notice in [
            Notice::Hello { from: a, seq: 7 },
            Notice::State {
                from: a,
                seq: 8,
                follows: true,
                answers: Some((b, 7)),
            },
            Notice::State {
                from: b,
                seq: 1,
                follows: false,
                answers: None,
            },
        ] {
            assert_eq!(Notice::decode(notice.encode().as_bytes()), Some(notice));
        }
        for garbage in [
            "hello x 1",
            "!hello x 1",
            "!hello",
            "!here a 1 b",
            "!what a 1",
        ] {
            assert_eq!(Notice::decode(garbage.as_bytes()), None, "{garbage}");
        }
        let envelope = crate::broker::Envelope::new(a, None, "{}".into()).encode();
        assert_eq!(Notice::decode(&envelope), None);
    }
}
