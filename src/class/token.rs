//! The secrets in a class's links. Each learner's page, terminal, picture
//! and bundle, and the instructor's board, are reached by a link that
//! carries a token: 128 bits from the operating system's random source,
//! written as 32 hex digits. A token is compared in constant time, so how
//! long a refusal takes says nothing about how close a guess was.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// 16 bytes: at least the 128 random bits the issue asks for.
const BYTES: usize = 16;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// A new token from the OS's random source.
    pub fn generate() -> Result<Token> {
        let mut bytes = [0u8; BYTES];
        getrandom::getrandom(&mut bytes)
            .map_err(|err| Error::failed(format!("reading random bytes for a token: {err}")))?;
        Ok(Token(hex::encode(bytes)))
    }

    /// Whether `offered` is this token, in time that does not depend on
    /// where they differ (only on the offered length, which is no secret).
    pub fn matches(&self, offered: &str) -> bool {
        self.0.as_bytes().ct_eq(offered.as_bytes()).into()
    }

    /// The token itself, for a link. Never for a log line.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

/// Tokens never print by accident: `{:?}` shows only that one is there.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_32_hex_digits_and_new_each_time() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.reveal().len(), 32);
        assert!(a.reveal().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn only_the_same_token_matches() {
        let a = Token::generate().unwrap();
        assert!(a.matches(a.reveal()));
        let mut near = a.reveal().to_string();
        let last = if near.ends_with('0') { "1" } else { "0" };
        near.replace_range(31.., last);
        assert!(!a.matches(&near));
        assert!(!a.matches(&a.reveal()[..31]));
        assert!(!a.matches(""));
        assert_eq!(format!("{a:?}"), "Token(…)");
    }
}
