//! Small tar archives built in memory: image build contexts and the files
//! copied into containers before they start (TLS material, configs).
//!
//! Entries are sorted and stamped with a zero mtime, so the same files always
//! make the same bytes, and a hash of the archive can name an image.

use crate::error::{Context, Result};

/// Packs `(path, contents, mode)` entries; leading `/` are dropped, so a
/// container upload to `/` puts `/etc/x` at `/etc/x`.
pub fn pack<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8], u32)>) -> Result<Vec<u8>> {
    let mut entries: Vec<_> = entries.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes, mode) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, path.trim_start_matches('/'), bytes)
            .with_context(|| format!("packing {path}"))?;
    }
    builder.into_inner().context("packing a tar archive")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_files_in_any_order_make_the_same_bytes() {
        let a = pack([("b", b"2".as_slice(), 0o644), ("a", b"1".as_slice(), 0o755)]).unwrap();
        let b = pack([("a", b"1".as_slice(), 0o755), ("b", b"2".as_slice(), 0o644)]).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn absolute_paths_become_relative() {
        let tar = pack([("/etc/docker/daemon.json", b"{}".as_slice(), 0o644)]).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["etc/docker/daemon.json"]);
    }
}
