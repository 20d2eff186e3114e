//! Access tokens (JWT) for the relay and the chat, verified with `jsonwebtoken`: HS256
//! with `AUTH_JWT_SECRET`, and/or RS256, ES256 or EdDSA with the public key
//! in `AUTH_JWT_PUBLIC_KEY` (a PEM file). A token must carry `exp`; its
//! `actions` list the actions it may register (exact names, or a prefix
//! ending in `*`); its optional `sub` names the client in logs and in its
//! registration. On the chat, `sub` is who the holder is (required: a
//! message records it as its author, sanctions hold it), `name` the
//! nickname and `rooms`, when present, the rooms it may enter; `roles`
//! containing `moderator` makes its holder a moderator. `nbf` is checked
//! when present; `iss` and `aud` must match `AUTH_JWT_ISSUER` and
//! `AUTH_JWT_AUDIENCE` when those are set. A refusal says why without ever
//! repeating the token.

use anyhow::Context;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// The keys tokens may be signed with, each with its algorithm.
pub struct Verifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    bound: Binding,
}

/// Whom tokens must be issued by and for (unset: not checked).
#[derive(Debug, Clone, Default)]
pub struct Binding {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    actions: Vec<String>,
    sub: Option<String>,
    name: Option<String>,
    rooms: Option<Vec<String>>,
    #[serde(default)]
    roles: Vec<String>,
}

/// What a valid token grants.
#[derive(Debug)]
pub struct Grant {
    pub sub: Option<String>,
    /// The chat nickname.
    pub name: Option<String>,
    actions: Vec<String>,
    rooms: Option<Vec<String>>,
    roles: Vec<String>,
}

impl Grant {
    /// True if the token's `roles` include `moderator`.
    pub fn is_moderator(&self) -> bool {
        self.roles.iter().any(|role| role == "moderator")
    }

    /// True if the token lists the action, or a prefix of it ending in `*`.
    pub fn allows(&self, action: &str) -> bool {
        self.actions
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => action.starts_with(prefix),
                None => allowed == action,
            })
    }

    /// True if the token lists the room, or lists no rooms at all.
    pub fn allows_room(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|rooms| rooms.iter().any(|r| r == room))
    }
}

/// Why a token is refused; each is a metric label and a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Missing,
    Malformed,
    Expired,
    BadSignature,
    /// `alg` is not one this server has a key for (`none` included).
    Algorithm,
    /// A valid token that does not list the action (or the room).
    OutOfScope,
    /// A chat token without a `name` to speak under.
    NoName,
    /// A chat token without a `sub` saying who holds it.
    NoSubject,
    /// Its `nbf` is still to come.
    NotYetValid,
    /// Its `iss` or `aud` is not this server's (`AUTH_JWT_ISSUER`,
    /// `AUTH_JWT_AUDIENCE`).
    NotForUs,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Missing => "token_missing",
            Refused::Malformed => "token_malformed",
            Refused::Expired => "token_expired",
            Refused::BadSignature => "token_bad_signature",
            Refused::Algorithm => "token_algorithm",
            Refused::OutOfScope => "token_out_of_scope",
            Refused::NoName => "token_no_name",
            Refused::NoSubject => "token_no_subject",
            Refused::NotYetValid => "token_not_yet_valid",
            Refused::NotForUs => "token_not_for_us",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::Missing => {
                "an access token is required: \"token\" in the registration, or Authorization: Bearer"
            }
            Refused::Malformed => "the access token is not a valid JWT with an exp claim",
            Refused::Expired => "the access token has expired",
            Refused::BadSignature => "the access token's signature does not verify",
            Refused::Algorithm => "the access token's algorithm is not accepted here",
            Refused::OutOfScope => "the access token does not allow this action or room",
            Refused::NoName => "the access token has no name claim to chat under",
            Refused::NoSubject => "the access token has no sub claim saying who holds it",
            Refused::NotYetValid => "the access token is not valid yet (nbf)",
            Refused::NotForUs => {
                "the access token was issued by another issuer or for another audience (iss, aud)"
            }
        })
    }
}

impl Verifier {
    /// From `AUTH_JWT_SECRET` and/or the PEM file `AUTH_JWT_PUBLIC_KEY`,
    /// bound to `AUTH_JWT_ISSUER` / `AUTH_JWT_AUDIENCE`.
    pub fn new(
        secret: Option<&str>,
        public_key: Option<&Path>,
        bound: Binding,
    ) -> anyhow::Result<Verifier> {
        let mut keys = Vec::new();
        if let Some(secret) = secret {
            keys.push((
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            ));
        }
        if let Some(path) = public_key {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read AUTH_JWT_PUBLIC_KEY {}", path.display()))?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .map(|key| (Algorithm::RS256, key))
                .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|key| (Algorithm::ES256, key)))
                .or_else(|_| DecodingKey::from_ed_pem(&pem).map(|key| (Algorithm::EdDSA, key)))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "AUTH_JWT_PUBLIC_KEY {} is not an RSA, EC (P-256) or Ed25519 public key in PEM",
                        path.display()
                    )
                })?;
            keys.push(key);
        }
        anyhow::ensure!(
            !keys.is_empty(),
            "RELAY_AUTH=required or CHAT_AUTH=required needs AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY"
        );
        Ok(Verifier { keys, bound })
    }

    pub fn verify(&self, token: &str) -> Result<Grant, Refused> {
        // `alg: none` does not even parse as a header: refused as malformed
        // or as an algorithm, never accepted.
        let header = decode_header(token).map_err(|err| match err.kind() {
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Refused::Algorithm,
            _ => Refused::Malformed,
        })?;
        let (algorithm, key) = self
            .keys
            .iter()
            .find(|(algorithm, _)| *algorithm == header.alg)
            .ok_or(Refused::Algorithm)?;
        let mut validation = Validation::new(*algorithm);
        let mut required = vec!["exp"];
        validation.validate_nbf = true;
        match &self.bound.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.bound.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Without a setting, an `aud` the token carries is not ours to judge.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = 0;
        let claims = decode::<Claims>(token, key, &validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => Refused::Expired,
                ErrorKind::InvalidSignature => Refused::BadSignature,
                ErrorKind::InvalidAlgorithm => Refused::Algorithm,
                ErrorKind::ImmatureSignature => Refused::NotYetValid,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => Refused::NotForUs,
                // A bound token missing `iss` or `aud` is not for us either.
                ErrorKind::MissingRequiredClaim(claim) if claim == "iss" || claim == "aud" => {
                    Refused::NotForUs
                }
                _ => Refused::Malformed,
            })?
            .claims;
        Ok(Grant {
            sub: claims.sub,
            name: claims.name,
            actions: claims.actions,
            rooms: claims.rooms,
            roles: claims.roles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_match_exactly_or_by_prefix() {
        let grant = Grant {
            sub: None,
            name: None,
            actions: vec!["lights".into(), "sensors.*".into()],
            rooms: Some(vec!["general".into()]),
            roles: vec!["moderator".into()],
        };
        assert!(grant.is_moderator());
        assert!(grant.allows_room("general"));
        assert!(!grant.allows_room("other"));
        assert!(grant.allows("lights"));
        assert!(grant.allows("sensors.kitchen"));
        assert!(!grant.allows("lights2"));
        assert!(!grant.allows("sensor"));
    }
}
