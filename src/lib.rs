//! goblog-lab as a library: what the `goblog-lab` binary runs, and what the
//! integration tests drive directly where the command line cannot reach
//! (booting bare VMs for the docker-machine adoption test, for one).

pub mod bench;
pub mod cli;
pub mod commands;
pub mod docker;
pub mod error;
pub mod http;
pub mod lab;
pub mod loopback;
pub mod pki;
pub mod preflight;
pub mod provider;
pub mod provision;
pub mod rootfs;
pub mod ssh;
pub mod steps;
pub mod tarball;
pub mod ui;
pub mod viz;
