//! Destroying one lab, as a library call: the `destroy` command and a
//! class (`class destroy`, `class reset`) both use it.
//!
//! The provider that made the lab does the removing. A dind lab's objects
//! are found by label, not from the state file, so destroy works after a
//! crash, after the state was deleted, and a second time; a VM lab's
//! QEMU processes and devices are found by name and alias the same way; an
//! ssh lab's hosts are given back as they were before the lab.

use crate::error::Result;
use crate::lab::state::LabDir;
use crate::provider::{self, Removed};
use crate::ui::Ui;

/// What a destroy found.
pub enum Gone {
    Removed(Removed),
    /// No state and nothing labelled: there was no such lab.
    Nothing,
}

/// Removes lab `name` and its files; a second call finds [`Gone::Nothing`].
pub async fn lab(name: &str, ui: &Ui) -> Result<Gone> {
    let dir = LabDir::new(name);
    // A damaged or missing state still leaves the labels to go by.
    let state = dir.load().ok();
    let provider = match &state {
        Some(state) => provider::for_lab(state, &dir, ui).await?,
        None => provider::for_leftovers(name, &dir, ui).await?,
    };
    let removed = crate::provision::remove_lab(&*provider, state.as_ref(), ui).await?;
    let had_state = dir.exists();
    dir.remove()?;
    Ok(if removed.is_empty() && !had_state {
        Gone::Nothing
    } else {
        Gone::Removed(removed)
    })
}
