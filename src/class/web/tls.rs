//! TLS for `class serve` off loopback: a server certificate from the
//! class's own CA (rcgen, through [`crate::pki`]), made once and kept with
//! the class (key 0600), its SHA-256 printed on the cards so a learner can
//! check what their browser shows; or a certificate the instructor has.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls;

use crate::class::state::ClassDir;
use crate::error::{Error, Result};
use crate::lab::state::{write_atomic, write_secret};

pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// SHA-256 of the server certificate, as browsers show it.
    pub fingerprint: String,
}

/// `--tls-cert` and `--tls-key`.
pub fn from_files(cert: &Path, key: &Path) -> Result<Tls> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|err| Error::usage(format!("cannot read {}: {err}", path.display())))
    };
    build(&read(cert)?, &read(key)?, cert)
}

/// The class's own certificate for `listen` (and `host`, when given),
/// made the first time and kept in the class's directory.
pub fn from_class_ca(class: &str, listen: &SocketAddr, host: Option<&str>) -> Result<Tls> {
    let dir = ClassDir::new(class);
    let cert_path = dir.root.join("tls/server.pem");
    let key_path = dir.root.join("tls/server-key.pem");
    if !cert_path.exists() || !key_path.exists() {
        let authority = crate::pki::Authority::create(&format!("class {class}"))?;
        let names: Vec<&str> = host.into_iter().collect();
        let server = authority.server(&names, &[listen.ip()])?;
        let chain = format!("{}{}", server.cert_pem, authority.cert_pem());
        write_atomic(&cert_path, chain.as_bytes(), 0o644)?;
        write_secret(&key_path, server.key_pem.as_bytes())?;
        write_atomic(
            &dir.root.join("tls/ca.pem"),
            authority.cert_pem().as_bytes(),
            0o644,
        )?;
    }
    let cert = std::fs::read(&cert_path)
        .map_err(|err| Error::failed(format!("reading {}: {err}", cert_path.display())))?;
    let key = std::fs::read(&key_path)
        .map_err(|err| Error::failed(format!("reading {}: {err}", key_path.display())))?;
    build(&cert, &key, &cert_path)
}

fn build(cert_pem: &[u8], key_pem: &[u8], named: &Path) -> Result<Tls> {
    let bad = |what: &str| Error::usage(format!("{}: {what}", named.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad("not a PEM certificate"))?;
    let first = chain.first().ok_or_else(|| bad("holds no certificate"))?;
    let fingerprint = Sha256::digest(first.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| bad("its key is not a PEM private key"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| Error::failed(format!("TLS: {err}")))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|err| {
        bad(&format!(
            "the certificate and key do not make a TLS server: {err}"
        ))
    })?;
    Ok(Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        fingerprint,
    })
}
