//! `goblog-lab bench`: the blog's Gatling load test (part 5), built in so a
//! workshop needs no JVM, no Maven and no Docker Hub.
//!
//! [`plan`] says what to send and when (pure, unit-tested), [`load`] sends
//! it over keep-alive connections and records what came back, and
//! [`report`] turns the recording into the table or JSON a person or a
//! script reads; [`html`] draws it as one page for a workshop screen.

pub mod html;
pub mod kill;
pub mod load;
pub mod plan;
pub mod report;
pub mod resources;
