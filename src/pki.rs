//! The lab's own certificate authority.
//!
//! Each node's Docker API listens on TCP, so it must not be open: the
//! engines demand a client certificate signed by this per-lab CA, exactly as
//! docker-machine set up its VMs. The client bundle lives where
//! `DOCKER_CERT_PATH` points (ca.pem, cert.pem, key.pem); keys are 0600.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::{Error, Result};
use crate::lab::state::{write_atomic, write_secret, LabDir};

/// A certificate and its private key, PEM encoded.
pub struct Bundle {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    pub fn create(lab: &str) -> Result<Self> {
        let params = ca_params(lab);
        let key = KeyPair::generate().map_err(pki_error)?;
        let cert = params.self_signed(&key).map_err(pki_error)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The lab's CA as `save` left it, to sign a node certificate again
    /// when a machine's address changed (docker-machine's most reported
    /// bug was certificates that broke when a VirtualBox IP changed).
    /// The issuer is the same name and key, so what it signs chains to
    /// the CA certificate every client already trusts.
    pub fn load(dir: &LabDir) -> Result<Self> {
        let read = |path: std::path::PathBuf| {
            std::fs::read_to_string(&path).map_err(|source| Error::Io {
                action: format!("reading {}", path.display()),
                source,
            })
        };
        let key = KeyPair::from_pem(&read(dir.ca_key())?).map_err(pki_error)?;
        Ok(Authority {
            cert_pem: read(dir.client_certs().join("ca.pem"))?,
            issuer: Issuer::new(ca_params(&dir.name), key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA key (0600) and the client bundle for DOCKER_CERT_PATH.
    pub fn save(&self, dir: &LabDir) -> Result<()> {
        let client = self.client()?;
        let certs = dir.client_certs();
        write_secret(&dir.ca_key(), self.issuer.key().serialize_pem().as_bytes())?;
        write_atomic(&certs.join("ca.pem"), self.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&certs.join("cert.pem"), client.cert_pem.as_bytes(), 0o644)?;
        write_secret(&certs.join("key.pem"), client.key_pem.as_bytes())
    }

    /// The certificate the user's `docker` CLI and goblog-lab present.
    pub fn client(&self) -> Result<Bundle> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name("goblog-lab client");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    /// A node engine's certificate, valid for its lab address and names.
    pub fn server(&self, hostnames: &[&str], addresses: &[IpAddr]) -> Result<Bundle> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(hostnames.first().copied().unwrap_or("node"));
        params.subject_alt_names = hostnames
            .iter()
            .map(|h| h.to_string().try_into().map(SanType::DnsName))
            .collect::<std::result::Result<_, _>>()
            .map_err(pki_error)?;
        params
            .subject_alt_names
            .extend(addresses.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<Bundle> {
        let key = KeyPair::generate().map_err(pki_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(pki_error)?;
        Ok(Bundle {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn ca_params(lab: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&format!("goblog-lab {lab} CA"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "goblog-lab");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn pki_error(err: rcgen::Error) -> Error {
    Error::Pki(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_ca_signs_node_certificates_and_keeps_keys_private() {
        let root = std::env::temp_dir().join(format!("goblog-lab-pki-{}", std::process::id()));
        let dir = LabDir {
            name: "t".into(),
            root: root.clone(),
        };
        let ca = Authority::create("t").unwrap();
        ca.save(&dir).unwrap();
        let saved = std::fs::read_to_string(dir.client_certs().join("ca.pem")).unwrap();
        assert_eq!(saved, ca.cert_pem());
        let server = ca
            .server(&["swarm-manager-0"], &["172.28.0.10".parse().unwrap()])
            .unwrap();
        assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        use std::os::unix::fs::PermissionsExt;
        for secret in [dir.ca_key(), dir.client_certs().join("key.pem")] {
            let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", secret.display());
        }
        std::fs::remove_dir_all(root).unwrap();
    }
}
