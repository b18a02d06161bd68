//! goblog-lab as a library: what the `goblog-lab` binary runs. The
//! integration tests drive the binary itself, as a user would.

pub mod bench;
pub mod class;
pub mod cli;
pub mod commands;
pub mod create;
pub mod destroy;
pub mod docker;
pub mod error;
pub mod http;
pub mod lab;
pub mod loopback;
pub mod open;
pub mod pki;
pub mod preflight;
pub mod provider;
pub mod provision;
pub mod redeploy;
pub mod retry;
pub mod rootfs;
pub mod routing;
pub mod ssh;
pub mod steps;
pub mod subnet;
pub mod tarball;
pub mod ui;
pub mod viz;
