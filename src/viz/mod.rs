//! `goblog-lab viz`: the blog's dvizz, built in. A poller reads the Swarm
//! from the lab's manager every second; a small HTTP server on loopback
//! serves the page (compiled into the binary, so it works offline), the
//! model as JSON, and the changes as Server-Sent Events. Where the lab has
//! an edge proxy, its stats give each task's request rate.

pub mod model;
pub mod poll;
pub mod rates;
pub mod server;
