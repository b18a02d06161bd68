//! `strength`: the CPU work a request costs, as in the blog's service, where
//! it lets a workshop load the quotes service on purpose (and watch the
//! accountservice's timeout and breaker react).
//!
//! One unit of strength is a fixed number of SHA-256 rounds, so the cost is
//! linear in N and the same on every machine for a given CPU. N is clamped
//! to [`MAX_STRENGTH`] so that one bad request cannot pin a core for long.

use sha2::{Digest, Sha256};

/// The most work one request may ask for.
pub const MAX_STRENGTH: u32 = 100;

/// Strength when the query does not say: no extra work.
pub const DEFAULT_STRENGTH: u32 = 0;

/// SHA-256 rounds per unit: a millisecond of one core with the CPU's SHA
/// instructions (measured: `strength=100` took 0.1 s), a few without. So
/// the lab's `strength=4` adds a few ms, and 100 approaches the
/// accountservice's 500 ms quote timeout on a slow machine.
const ROUNDS_PER_UNIT: u32 = 15_000;

/// The `strength` of a query string: absent or empty means the default,
/// digits are clamped to [`MAX_STRENGTH`], anything else is the caller's
/// mistake, told as a sentence.
pub fn strength(query: Option<&str>) -> Result<u32, String> {
    let value = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == "strength")
        .map(|(_, value)| value);
    match value {
        None | Some("") => Ok(DEFAULT_STRENGTH),
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => {
            // All digits but too long for u32: as much work as allowed.
            Ok(digits
                .parse::<u32>()
                .map_or(MAX_STRENGTH, |n| n.min(MAX_STRENGTH)))
        }
        Some(_) => Err(format!(
            "strength must be a whole number from 0 to {MAX_STRENGTH}"
        )),
    }
}

/// Burns `strength` units of CPU; the result only keeps the optimiser from
/// dropping the loop.
pub fn burn(strength: u32) -> [u8; 32] {
    let mut digest = [0u8; 32];
    for _ in 0..rounds(strength) {
        digest = Sha256::digest(digest).into();
    }
    std::hint::black_box(digest)
}

/// The hashing rounds of `strength`, clamped whoever calls.
fn rounds(strength: u32) -> u32 {
    strength.min(MAX_STRENGTH) * ROUNDS_PER_UNIT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_is_read_from_the_query() {
        assert_eq!(strength(None), Ok(DEFAULT_STRENGTH));
        assert_eq!(strength(Some("")), Ok(DEFAULT_STRENGTH));
        assert_eq!(strength(Some("strength=")), Ok(DEFAULT_STRENGTH));
        assert_eq!(strength(Some("strength")), Ok(DEFAULT_STRENGTH));
        assert_eq!(strength(Some("strength=4")), Ok(4));
        assert_eq!(strength(Some("x=1&strength=7&y")), Ok(7));
        assert_eq!(strength(Some("strengths=9")), Ok(DEFAULT_STRENGTH));
    }

    #[test]
    fn strength_is_clamped() {
        assert_eq!(strength(Some("strength=100")), Ok(100));
        assert_eq!(strength(Some("strength=101")), Ok(MAX_STRENGTH));
        assert_eq!(
            strength(Some("strength=99999999999999999999999")),
            Ok(MAX_STRENGTH)
        );
    }

    #[test]
    fn anything_but_digits_is_refused() {
        for bad in [
            "strength=-1",
            "strength=four",
            "strength=4.5",
            "strength=%34",
            "strength= 4",
        ] {
            let err = strength(Some(bad)).unwrap_err();
            assert!(err.contains("0 to 100"), "{bad}: {err}");
        }
    }

    #[test]
    fn work_grows_with_strength_and_is_deterministic() {
        assert_eq!(burn(0), [0u8; 32]);
        assert_eq!(burn(1), burn(1));
        assert_ne!(burn(1), burn(2));
        assert_eq!(rounds(2), 2 * rounds(1));
        assert_eq!(rounds(u32::MAX), rounds(MAX_STRENGTH));
    }
}
