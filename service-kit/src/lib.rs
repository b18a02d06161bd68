//! What the blog's two Rust services, the accountservice and the
//! quotes-service, need alike, written once.
//!
//! Both run as one static binary in a `FROM scratch` image, behind Swarm:
//! they serve HTTP/1.1 until SIGTERM and then drain (`server`), probe their
//! own `/health` for the image's HEALTHCHECK (`healthcheck`), say which
//! replica answered (`netinfo`), and take the same flags for all that
//! (`cli`). What differs between them, their routes, start-up lines, runtime
//! and flag names in the environment, stays in each service.
//!
//! The crate adds no dependency the services do not already have: the
//! accountservice's idle RSS is mostly its code pages.

pub mod cli;
pub mod healthcheck;
pub mod netinfo;
pub mod server;

pub use server::{serve, serve_per_core, ServeError};
