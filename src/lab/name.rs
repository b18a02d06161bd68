//! Lab names end up in container, volume and network names and in file
//! paths, so they are checked once, here, before anything is made.

use crate::error::{Error, Result};

pub const DEFAULT: &str = "goblog";
const MAX_LEN: usize = 24;

/// Accepts 1-24 lowercase letters, digits and inner dashes, starting with a
/// letter: safe as a DNS label prefix, a Docker object name and a directory.
pub fn validate(name: &str) -> Result<()> {
    validate_as("lab", name, MAX_LEN)
}

/// The rule of [`validate`] for a name of `what` (a lab, a class) at most
/// `max` long; the error names `what`.
pub fn validate_as(what: &str, name: &str, max: usize) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid {what} name {name:?}: use 1-{max} lowercase letters, digits or inner '-', starting with a letter"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for name in ["goblog", "a", "lab-2", "workshop-day1"] {
            assert!(validate(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_odd_characters() {
        for name in [
            "",
            "Goblog",
            "go blog",
            "lab_1",
            "../etc",
            "-lab",
            "lab-",
            "1lab",
            "läb",
            "averyveryverylongnamethatgoesonandon",
        ] {
            let err = validate(name).unwrap_err().to_string();
            assert!(err.starts_with("invalid lab name"), "{name}: {err}");
            assert!(!err.contains('\n'));
        }
    }
}
