//! Who a VM is, decided on this host before it boots: its hostname, its
//! address, the lab's key that may log in as root, and its own SSH host
//! key.
//!
//! Every VM boots the same base disk, so none of this may live in it (the
//! probe that shared machine-id and host keys between VMs found both
//! traps). It travels on a second, read-only disk holding a tar archive,
//! which `goblog-identity.service` in the image unpacks before sshd and
//! dockerd start: no network fetch and no cloud-init delay. Because the host
//! key is made here, its public half is recorded in the lab's known_hosts
//! before the first connection, so the lab never has to trust a key on first
//! use.

use std::net::Ipv4Addr;

use ssh_key::{rand_core::OsRng, Algorithm, LineEnding, PrivateKey};

use crate::error::{Error, Result};

/// An ed25519 key pair in OpenSSH's formats.
pub struct KeyPair {
    pub private_openssh: String,
    /// `ssh-ed25519 AAAA... comment`
    pub public_openssh: String,
}

pub fn ed25519(comment: &str) -> Result<KeyPair> {
    let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .map_err(|err| Error::Pki(format!("making an ed25519 key: {err}")))?;
    key.set_comment(comment);
    let private_openssh = key
        .to_openssh(LineEnding::LF)
        .map_err(|err| Error::Pki(format!("encoding an ed25519 key: {err}")))?
        .to_string();
    let public_openssh = key
        .public_key()
        .to_openssh()
        .map_err(|err| Error::Pki(format!("encoding an ed25519 key: {err}")))?;
    Ok(KeyPair {
        private_openssh,
        public_openssh,
    })
}

/// What one VM is told at boot.
pub struct Identity<'a> {
    pub hostname: &'a str,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// The lab's public key, for root.
    pub authorized_key: &'a str,
    pub host_key: &'a KeyPair,
}

impl Identity<'_> {
    /// The config disk: a tar archive, whole 512-byte blocks as a disk needs.
    pub fn disk(&self) -> Result<Vec<u8>> {
        let files: [(&str, String, u32); 6] = [
            ("hostname", format!("{}\n", self.hostname), 0o644),
            (
                "address",
                format!("{}/{}\n", self.address, self.prefix),
                0o644,
            ),
            ("gateway", format!("{}\n", self.gateway), 0o644),
            (
                "authorized_keys",
                format!("{}\n", self.authorized_key.trim()),
                0o600,
            ),
            (
                "ssh_host_ed25519_key",
                self.host_key.private_openssh.clone(),
                0o600,
            ),
            (
                "ssh_host_ed25519_key.pub",
                format!("{}\n", self.host_key.public_openssh.trim()),
                0o644,
            ),
        ];
        crate::tarball::pack(
            files
                .iter()
                .map(|(name, contents, mode)| (*name, contents.as_bytes(), *mode)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_holds_every_file_the_vm_reads() {
        let host_key = ed25519("swarm-manager-0").unwrap();
        let disk = Identity {
            hostname: "swarm-manager-0",
            address: Ipv4Addr::new(192, 168, 99, 100),
            prefix: 24,
            gateway: Ipv4Addr::new(192, 168, 99, 1),
            authorized_key: "ssh-ed25519 AAAA lab",
            host_key: &host_key,
        }
        .disk()
        .unwrap();
        assert_eq!(disk.len() % 512, 0);
        let mut archive = tar::Archive::new(&disk[..]);
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            match name.as_str() {
                "address" => assert_eq!(text, "192.168.99.100/24\n"),
                "ssh_host_ed25519_key" => {
                    assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
                    assert_eq!(entry.header().mode().unwrap(), 0o600);
                }
                "ssh_host_ed25519_key.pub" => assert!(text.starts_with("ssh-ed25519 ")),
                _ => {}
            }
            names.push(name);
        }
        assert_eq!(names.len(), 6, "{names:?}");
    }

    #[test]
    fn every_key_is_new() {
        let (a, b) = (ed25519("a").unwrap(), ed25519("b").unwrap());
        assert_ne!(a.public_openssh, b.public_openssh);
        assert!(a.public_openssh.ends_with(" a"));
    }
}
