//! Who a chat participant is, apart from the name they show: what a stored
//! message records as its author, what rate limits follow across
//! reconnects, and the marks sanctions are kept under.
//!
//! - With access tokens, a participant is the token's subject (`sub`).
//! - Without, the server knows a session (the id the page keeps for the
//!   tab and sends with `join`) and an address: the author identity is
//!   derived from the session (the session itself stays a secret: it
//!   reclaims the nickname), and sanctions also hold the nickname (and its
//!   look-alikes) and the client's address (IPv6: its /64) when it is a
//!   public one: a loopback, private or shared (CGNAT) address is often
//!   everybody's (a proxy whose header is not trusted, a LAN), and a ban
//!   of it would shut everybody out.
//!
//! A sanction is recorded under every mark of its target, and a person is
//! held by it when any of their marks carries it. Marks are plain strings
//! with a one-letter kind, so that a subject can never read as a nickname.

use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv6Addr};
use uuid::Uuid;

/// The mark of a token subject.
pub fn subject_mark(sub: &str) -> String {
    format!("s:{sub}")
}

/// The mark of a nickname (by its look-alike key, `crate::nickname::key`).
pub fn name_mark(key: &str) -> String {
    format!("n:{key}")
}

/// The mark of an anonymous participant's identity.
pub fn anonymous_mark(id: &str) -> String {
    format!("i:{id}")
}

/// The mark of a client address.
pub fn address_mark(block: &str) -> String {
    format!("a:{block}")
}

/// The author identity of an anonymous participant: a hash of the session,
/// which stays the same when the session reconnects and says nothing of
/// the session itself.
pub fn anonymous_id(session: Uuid) -> String {
    let digest = Sha256::digest(format!("chat-anonymous:{session}").as_bytes());
    format!("anon-{}", hex::encode(&digest[..8]))
}

/// A client address as sanctions and limits count it: an IPv6 host
/// usually gets a whole /64, so one address of it stands for all.
pub fn address_block(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Who is behind one chat connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Person {
    /// The subject of a valid access token.
    Subject(String),
    /// No token: known by its address block until it joins with a session.
    Anonymous { address: IpAddr },
}

impl Person {
    pub fn anonymous(address: IpAddr) -> Self {
        Person::Anonymous {
            address: address_block(address),
        }
    }

    /// The author identity of what this person sends under `session`.
    pub fn author_id(&self, session: Uuid) -> String {
        match self {
            Person::Subject(sub) => sub.clone(),
            Person::Anonymous { .. } => anonymous_id(session),
        }
    }

    /// The address that sanctions also hold (anonymous participants on a
    /// public address only: a subject is held wherever it connects from).
    pub fn address(&self) -> Option<String> {
        match self {
            Person::Anonymous { address } if is_public(*address) => Some(address.to_string()),
            _ => None,
        }
    }

    /// What a connection that has not joined is held by.
    pub fn marks(&self) -> Vec<String> {
        match self {
            Person::Subject(sub) => vec![subject_mark(sub)],
            Person::Anonymous { .. } => self
                .address()
                .map(|a| address_mark(&a))
                .into_iter()
                .collect(),
        }
    }

    /// What a member (its nickname's key and its author identity) is held
    /// by: a subject by its subject alone (a look-alike name is somebody
    /// else); an anonymous participant by its nickname, its identity and
    /// its address.
    pub fn member_marks(&self, key: &str, author_id: &str) -> Vec<String> {
        match self {
            Person::Subject(sub) => vec![subject_mark(sub)],
            Person::Anonymous { .. } => {
                let mut marks = vec![name_mark(key), anonymous_mark(author_id)];
                marks.extend(self.address().map(|a| address_mark(&a)));
                marks
            }
        }
    }
}

/// Whether an address is one person's as far as the server can tell: not
/// loopback, private, link-local, shared (CGNAT, 100.64/10) or unique
/// local (fc00::/7).
fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || shared)
        }
        IpAddr::V6(v6) => {
            let unique_local = (v6.segments()[0] & 0xfe00) == 0xfc00;
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || v6.is_unspecified() || unique_local || link_local)
        }
    }
}

/// The marks a sanction of a participant is recorded under, from what is
/// known of them: their nickname's key always (so that a sanction can be
/// found and lifted by name), their author identity and address when known.
/// `subjects`: identities are token subjects (chat access tokens are on).
pub fn target_marks(
    key: &str,
    author_id: Option<&str>,
    address: Option<&str>,
    subjects: bool,
) -> Vec<String> {
    let mut marks = vec![name_mark(key)];
    if let Some(id) = author_id.filter(|id| !id.is_empty()) {
        marks.push(if subjects {
            subject_mark(id)
        } else {
            anonymous_mark(id)
        });
    }
    if let Some(address) = address.filter(|a| !a.is_empty()) {
        marks.push(address_mark(address));
    }
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anonymous_identity_is_stable_and_hides_the_session() {
        let session = Uuid::new_v4();
        let id = anonymous_id(session);
        assert_eq!(id, anonymous_id(session));
        assert_ne!(id, anonymous_id(Uuid::new_v4()));
        assert_eq!(id.len(), "anon-".len() + 16);
        assert!(!id.contains(&session.simple().to_string()[..8]));
    }

    #[test]
    fn a_v6_host_is_its_64_and_a_mapped_v4_is_itself() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(address_block(a), address_block(b));
        assert_eq!(address_block(a).to_string(), "2001:db8:1:2::");
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(address_block(mapped).to_string(), "10.0.0.7");
    }

    #[test]
    fn a_subject_is_held_by_its_subject_and_an_anonymous_person_by_all_it_shows() {
        let sub = Person::Subject("42".into());
        assert_eq!(sub.member_marks("alice", "42"), ["s:42"]);
        let anon = Person::anonymous("203.0.113.7".parse().unwrap());
        assert_eq!(anon.marks(), ["a:203.0.113.7"]);
        assert_eq!(
            anon.member_marks("alice", "anon-1"),
            ["n:alice", "i:anon-1", "a:203.0.113.7"]
        );
        // Everybody's addresses hold nobody.
        for shared in [
            "127.0.0.1",
            "10.0.0.7",
            "192.168.1.2",
            "100.64.3.4",
            "::1",
            "fd00::1",
        ] {
            let anon = Person::anonymous(shared.parse().unwrap());
            assert!(anon.marks().is_empty(), "{shared}");
            assert_eq!(anon.member_marks("bob", "anon-2"), ["n:bob", "i:anon-2"]);
        }
        assert_eq!(
            target_marks("alice", Some("42"), None, true),
            ["n:alice", "s:42"]
        );
        assert_eq!(
            target_marks("bob", Some("anon-1"), Some("10.0.0.7"), false),
            ["n:bob", "i:anon-1", "a:10.0.0.7"]
        );
    }
}
