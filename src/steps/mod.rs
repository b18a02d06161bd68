//! The steps of `create`, one file each, in the order they run. Each talks
//! to Docker for one purpose and knows nothing of the terminal.

pub mod deploy;
pub mod edge;
pub mod engines;
pub mod images;
pub mod node_image;
pub mod registry;
pub mod swarm;
pub mod vip;
pub mod wait;
