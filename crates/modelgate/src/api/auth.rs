//! Bearer-token authentication for the admin listener.
//!
//! Tokens come from `--admin-token` / `MODELGATE_ADMIN_TOKEN` (named `admin`)
//! or a file of `name token` lines (`--admin-token-file`), so audit events can
//! say which operator acted. With no token configured the admin listener is
//! open, which is why it binds loopback by default; the actor is then the peer
//! address.
//!
//! With mutual TLS (`--admin-client-ca`) the TLS layer has already refused
//! clients without a certificate from that CA; the certificate's subject is
//! then the actor, or is added to the token's name when tokens are also
//! configured (both are then needed): `alice (cert CN=alice-laptop)`.

use std::path::Path;

use tonic::{Request, Status};

/// A named admin credential.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log a secret.
        f.debug_struct("Token").field("name", &self.name).field("secret", &"<redacted>").finish()
    }
}

impl Token {
    pub fn new(name: impl Into<String>, secret: impl Into<String>) -> Self {
        Self { name: name.into(), secret: secret.into() }
    }
}

/// Reads `name token` lines; blank lines and `#` comments are skipped.
pub fn read_token_file(path: &Path) -> anyhow::Result<Vec<Token>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read admin token file {}: {e}", path.display()))?;
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(secret), None) => tokens.push(Token::new(name, secret)),
            _ => anyhow::bail!("{}:{}: expected `name token`", path.display(), i + 1),
        }
    }
    if tokens.is_empty() {
        anyhow::bail!("admin token file {} holds no token", path.display());
    }
    Ok(tokens)
}

/// Who made an admin call: a token's name, a client certificate's subject,
/// both, or with neither the peer address.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// Whether `presented` is exactly `secret`, in time that depends on neither
/// (both are hashed first, so not even the secret's length leaks).
fn token_matches(secret: &str, presented: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(secret.as_bytes()), Sha256::digest(presented.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The interceptor: checks the bearer token and records the [`Actor`].
#[derive(Debug, Clone)]
pub struct AdminAuth {
    tokens: Vec<Token>,
}

impl AdminAuth {
    pub fn new(tokens: Vec<Token>) -> Self {
        Self { tokens }
    }

    pub fn check<T>(&self, mut req: Request<T>) -> Result<Request<T>, Status> {
        let subject = crate::api::tls::client_subject(&req);
        let actor = if self.tokens.is_empty() {
            subject
                .clone()
                .unwrap_or_else(|| req.remote_addr().map_or_else(|| "unknown".to_string(), |a| a.to_string()))
        } else {
            let header = req
                .metadata()
                .get("authorization")
                .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>` metadata"))?;
            let presented = header
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .ok_or_else(|| Status::unauthenticated("authorization metadata must be `Bearer <token>`"))?;
            // Exactly the configured bytes: a token with spaces around it is a
            // different token (a pasted newline or a shell quoting slip), and
            // the message says so without echoing what was sent.
            if presented.trim() != presented || presented.is_empty() {
                return Err(Status::unauthenticated(
                    "admin token not recognised: it is empty or has leading or trailing whitespace; send exactly `Bearer <token>` with one space",
                ));
            }
            // Every token is compared, so the time taken does not say which
            // one (or whether any) matched.
            let matched = self.tokens.iter().fold(None, |found, t| {
                let hit = token_matches(&t.secret, presented);
                found.or(hit.then_some(t))
            });
            let token = matched.ok_or_else(|| Status::unauthenticated("admin token not recognised"))?;
            match &subject {
                Some(subject) => format!("{} (cert {subject})", token.name),
                None => token.name.clone(),
            }
        };
        req.extensions_mut().insert(Actor(actor));
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_named() {
        let auth = AdminAuth::new(vec![Token::new("alice", "s3cret")]);
        let mut req = Request::new(());
        req.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
        let req = auth.check(req).unwrap();
        assert_eq!(req.extensions().get::<Actor>().unwrap().0, "alice");
        let mut bad = Request::new(());
        bad.metadata_mut().insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(auth.check(bad).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(auth.check(Request::new(())).unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn only_the_exact_token_is_accepted_and_never_echoed() {
        let auth = AdminAuth::new(vec![Token::new("alice", "s3cret"), Token::new("bob", "0ther")]);
        let with = |value: &str| {
            let mut req = Request::new(());
            req.metadata_mut().insert("authorization", value.parse().unwrap());
            auth.check(req)
        };
        assert_eq!(with("Bearer 0ther").unwrap().extensions().get::<Actor>().unwrap().0, "bob");
        for bad in ["Bearer  s3cret", "Bearer s3cret ", "Bearer \ts3cret", "Bearer s3cret\t", "Bearer "] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(e.message().contains("leading or trailing whitespace"), "{bad:?}: {}", e.message());
            assert!(!e.message().contains("s3cret"), "{}", e.message());
        }
        for bad in ["Bearer s3cre", "Bearer s3cretx", "Bearer S3CRET"] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.message(), "admin token not recognised", "{bad:?}");
        }
        assert!(token_matches("s3cret", "s3cret") && !token_matches("s3cret", "s3cret "));
    }

    #[test]
    fn token_files_parse_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, "# ops\nalice a1\n\nbob b2\n").unwrap();
        let t = read_token_file(&p).unwrap();
        assert_eq!(t.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        std::fs::write(&p, "alice\n").unwrap();
        assert!(read_token_file(&p).unwrap_err().to_string().contains(":1: expected `name token`"));
        assert!(format!("{:?}", t[0]).contains("redacted"));
    }
}
