//! Free subnets for the bridges this tool makes on the host engine (a
//! dind lab's network, a class's network): a /24 of 172.28.0.0/14 that
//! overlaps no Docker network and no route of this host, so a lab never
//! shadows a LAN, a VM lab's host-only network or another lab. Docker's
//! own pool would not know the routes: a class network it picked
//! (192.168.96.0/20) covered a qemu lab's 192.168.99.0/24, and the
//! learner's console sent its packets for the VMs to the wrong link.

use std::net::Ipv4Addr;

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::ListNetworksOptionsBuilder;
use bollard::Docker;
use ipnet::Ipv4Net;

use crate::error::{docker_message, Context, Error, Result};

/// Makes the bridge `request` describes for a free subnet and returns the
/// subnet. Two bridges made at the same moment may pick the same one: the
/// engine refuses the second, which then skips it (the first may not be
/// listed yet).
pub async fn create_bridge(
    docker: &Docker,
    name: &str,
    request: impl Fn(Ipv4Net) -> NetworkCreateRequest,
) -> Result<Ipv4Net> {
    let mut refused = Vec::new();
    for _attempt in 0..16 {
        let mut used = used_subnets(docker).await?;
        used.extend(refused.iter().copied());
        let subnet = first_free_subnet(&used).ok_or(Error::NoFreeSubnet)?;
        match docker.create_network(request(subnet)).await {
            Ok(_) => return Ok(subnet),
            Err(err) if docker_message(&err).contains("overlaps") => refused.push(subnet),
            Err(err) => return Err(err).with_context(|| format!("creating network {name}")),
        }
    }
    Err(Error::NoFreeSubnet)
}

async fn used_subnets(docker: &Docker) -> Result<Vec<Ipv4Net>> {
    let networks = docker
        .list_networks(Some(ListNetworksOptionsBuilder::default().build()))
        .await
        .context("listing Docker networks")?;
    let mut used: Vec<Ipv4Net> = networks
        .iter()
        .flat_map(|n| n.ipam.iter().flat_map(|i| i.config.iter().flatten()))
        .filter_map(|c| c.subnet.as_deref().and_then(|s| s.parse().ok()))
        .collect();
    used.extend(host_routes());
    Ok(used)
}

/// Routes of this host (`/proc/net/route`), so the lab never shadows a LAN.
fn host_routes() -> Vec<Ipv4Net> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(fields.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
            // The default route (0.0.0.0/0) overlaps everything; skip it.
            if mask == 0 {
                return None;
            }
            Ipv4Net::with_netmask(
                Ipv4Addr::from(u32::from_be(dest)),
                Ipv4Addr::from(u32::from_be(mask)),
            )
            .ok()
        })
        .collect()
}

/// The `n`th address of `subnet` (.1 is the gateway).
pub fn host_in(subnet: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + n)
}

/// The address this tool keeps for a lab's virtual `$ManagerIP` in the
/// /24 that holds `address`: the last one, far from the nodes (.10 and up
/// for managers, .100 and up for workers) and from Docker's allocations,
/// which start at .2.
pub fn spare_address(address: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, _] = address.octets();
    Ipv4Addr::new(a, b, c, 254)
}

/// The first /24 of 172.28.0.0/14 (172.28-31.x.0) that overlaps none of `used`.
fn first_free_subnet(used: &[Ipv4Net]) -> Option<Ipv4Net> {
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    Ipv4Net::new(Ipv4Addr::new(172, 28, 0, 0), 14)
        .expect("a valid prefix")
        .subnets(24)
        .expect("24 is longer than 14")
        .find(|candidate| !used.iter().any(|u| overlaps(candidate, u)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_subnet_nobody_uses() {
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert_eq!(first_free_subnet(&[]), Some(net("172.28.0.0/24")));
        let used = [net("172.28.0.0/24"), net("172.28.1.0/24")];
        assert_eq!(first_free_subnet(&used), Some(net("172.28.2.0/24")));
        // A /16 in the way pushes past all of it.
        assert_eq!(
            first_free_subnet(&[net("172.28.0.0/16")]),
            Some(net("172.29.0.0/24"))
        );
        // A host route inside a candidate makes it taken too.
        assert_eq!(
            first_free_subnet(&[net("172.28.0.128/25")]),
            Some(net("172.28.1.0/24"))
        );
        // All of 172.28.0.0/14 taken: none left.
        assert_eq!(first_free_subnet(&[net("172.16.0.0/12")]), None);
        assert_eq!(
            host_in(net("172.28.3.0/24"), 10),
            Ipv4Addr::new(172, 28, 3, 10)
        );
    }
}
