//! The lab model: what the user asked for (spec) and what exists (state).
//! Plain data; nothing here talks to Docker.

pub mod kind;
pub mod name;
pub mod overrides;
pub mod spec;
pub mod state;
