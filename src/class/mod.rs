//! A classroom: one lab per learner on this machine, a console container
//! beside each, and a web front (`class serve`) that gives each learner a
//! terminal and the live picture of their own lab in a browser, behind a
//! token of their own.
//!
//! It exists because workshop laptops are mostly macOS or Windows on bad
//! Wi-Fi: one instructor's server runs every lab, and a learner needs only
//! a browser. Every lab is made by [`crate::create::create`], several at a
//! time in this one process, each reporting to its own progress sink.
//!
//! - [`state`]: the class as plain data, saved 0600 (it holds the tokens);
//! - [`token`]: 128-bit tokens, compared in constant time;
//! - [`capacity`]: how many labs this machine holds, decided from facts;
//! - [`console`]: the learner's unprivileged container;
//! - [`run`]: create, reset and destroy, lab by lab;
//! - [`web`]: the learner's page, the terminal's WebSocket, the board, the cards.

pub mod capacity;
pub mod console;
pub mod run;
pub mod state;
pub mod token;
pub mod web;
