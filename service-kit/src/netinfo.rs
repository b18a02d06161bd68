//! Which address this instance answers from (`servedBy`, blog part 7).
//!
//! Behind Swarm's load balancing, the container's own IPv4 shows which replica
//! served a request. `getifaddrs` talks netlink directly, so unlike name
//! lookups it works in a static binary in a `FROM scratch` image.

use std::net::Ipv4Addr;

/// The first non-loopback IPv4 address, in interface order; loopback when the
/// machine has nothing else (e.g. `--network none`).
// Inline: compiled into the service beside the rest of its start-up, as
// when this file was the accountservice's own. Out of line, in this crate,
// it cost the accountservice's static binary 15 KB and its idle RSS about
// 130 KiB (more code pages touched at start-up).
#[inline]
pub fn served_by() -> String {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces
            .iter()
            .filter_map(|iface| match iface.ip() {
                std::net::IpAddr::V4(ip) if !ip.is_loopback() => Some(ip),
                _ => None,
            })
            .next()
            .unwrap_or(Ipv4Addr::LOCALHOST)
            .to_string(),
        Err(err) => {
            eprintln!("cannot list network interfaces ({err}); servedBy will say 127.0.0.1");
            Ipv4Addr::LOCALHOST.to_string()
        }
    }
}
