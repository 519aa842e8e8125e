//! The TunnelRequest: the message `tusk tunnel` sends `tusk router` before it copies a client's
//! bytes, so that the router routes the connection to the database the tunnel serves.
//!
//! A client in a customer's cluster connects to the tunnel Service and sends that Service's
//! name as its TLS server name, a name any customer's cluster may have: it cannot say which
//! database is meant. The tunnel therefore names the database itself (its external host name)
//! and proves with a token that it is a tunnel of that database. The router checks the token
//! against the SHA-256 digests the database's PostgresRemoteClusters publish in their status
//! (`status.tunnelTokenSha256`), then reads the client's SSLRequest and ClientHello as from any
//! client and forwards them unchanged: TLS still ends in the database.
//!
//! Framed like PostgreSQL's own special requests, so it cannot be mistaken for one:
//!
//! ```text
//! Int32   length of the whole message, itself included
//! Int32   REQUEST_CODE ("tusk" in ASCII; as a protocol version, no PostgreSQL version)
//! String  the database's external host name, NUL-terminated
//! String  the token, 64 lowercase hexadecimal digits, NUL-terminated
//! ```

use sha2::{Digest, Sha256};

/// The environment variable `tusk tunnel` reads its token from (never a process argument).
pub const TOKEN_ENV: &str = "TUSK_TUNNEL_TOKEN";
/// The key of the token in the tunnel's token Secret.
pub const TOKEN_KEY: &str = "token";

/// The request code, `0x7475736b`.
pub const REQUEST_CODE: u32 = u32::from_be_bytes(*b"tusk");
/// The most bytes a TunnelRequest takes: the header, a 253-byte name, a token and two NULs.
pub const MAX_LENGTH: usize = 8 + 253 + 1 + TOKEN_LENGTH + 1;
/// The characters of a token: 32 random bytes in hexadecimal.
pub const TOKEN_LENGTH: usize = 64;

/// A TunnelRequest's contents.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelRequest {
    /// The external host name of the database, lowercase.
    pub name: String,
    /// The tunnel's token.
    pub token: String,
}

impl std::fmt::Debug for TunnelRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never in a log line.
        f.debug_struct("TunnelRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Whether `token` has the form of a token: 64 lowercase hexadecimal digits.
pub fn is_token(token: &str) -> bool {
    token.len() == TOKEN_LENGTH
        && token
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// A token made of 32 random bytes (the caller draws them).
pub fn token_from_random(random: &[u8; 32]) -> String {
    hex(random)
}

/// The SHA-256 digest of `token`, in lowercase hexadecimal: what a PostgresRemoteCluster
/// publishes so that the router can check the token without holding it.
pub fn token_digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The message for `name` and `token`. `None` when either would not be accepted by [`decode`].
pub fn encode(name: &str, token: &str) -> Option<Vec<u8>> {
    if name.is_empty() || name.len() > 253 || name.contains('\0') || !is_token(token) {
        return None;
    }
    let length = 8 + name.len() + 1 + token.len() + 1;
    let mut message = Vec::with_capacity(length);
    message.extend_from_slice(&u32::try_from(length).ok()?.to_be_bytes());
    message.extend_from_slice(&REQUEST_CODE.to_be_bytes());
    message.extend_from_slice(name.as_bytes());
    message.push(0);
    message.extend_from_slice(token.as_bytes());
    message.push(0);
    Some(message)
}

/// Reads a whole TunnelRequest (`message` is exactly its declared length). `None` when it is
/// not one, or its name or token is malformed.
pub fn decode(message: &[u8]) -> Option<TunnelRequest> {
    let header = message.get(..8)?;
    let length = u32::from_be_bytes(header[..4].try_into().ok()?);
    let code = u32::from_be_bytes(header[4..].try_into().ok()?);
    if code != REQUEST_CODE || usize::try_from(length).ok()? != message.len() {
        return None;
    }
    let body = message[8..].strip_suffix(&[0])?;
    let (name, token) = body.split_at(body.iter().position(|&byte| byte == 0)?);
    let token = std::str::from_utf8(&token[1..]).ok()?;
    let name = std::str::from_utf8(name).ok()?;
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.');
    (name_ok && is_token(token)).then(|| TunnelRequest {
        name: name.to_ascii_lowercase(),
        token: token.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_request_reads_back_as_written() {
        let message = encode("Elephant.shop.db.example.com", TOKEN).unwrap();
        assert_eq!(message.len(), 8 + 28 + 1 + 64 + 1);
        assert_eq!(&message[4..8], b"tusk");
        let request = decode(&message).unwrap();
        assert_eq!(request.name, "elephant.shop.db.example.com");
        assert_eq!(request.token, TOKEN);
        assert!(!format!("{request:?}").contains(TOKEN));
    }

    #[test]
    fn malformed_requests_are_not_read() {
        let good = encode("elephant.shop.db.example.com", TOKEN).unwrap();
        // Cut, extended, with another code, with a NUL missing.
        assert!(decode(&good[..good.len() - 1]).is_none());
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode(&longer).is_none());
        let mut other_code = good.clone();
        other_code[7] ^= 1;
        assert!(decode(&other_code).is_none());
        // Names with characters no host name has, and tokens of the wrong form.
        for name in ["", "a b", "a\u{7f}", "ünïcode"] {
            let mut message = good[..8].to_vec();
            message.extend_from_slice(name.as_bytes());
            message.push(0);
            message.extend_from_slice(TOKEN.as_bytes());
            message.push(0);
            let length = u32::try_from(message.len()).unwrap().to_be_bytes();
            message[..4].copy_from_slice(&length);
            assert!(decode(&message).is_none(), "{name:?}");
        }
        assert!(encode("elephant", &TOKEN.to_uppercase()).is_none());
        assert!(encode("elephant", &TOKEN[1..]).is_none());
        assert!(encode(&"a".repeat(254), TOKEN).is_none());
    }

    #[test]
    fn the_digest_is_sha256_in_hex() {
        assert_eq!(
            token_digest(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_token(&token_digest(TOKEN)));
        assert!(is_token(&token_from_random(&[0xa5; 32])));
    }
}
