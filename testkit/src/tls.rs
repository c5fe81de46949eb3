//! Certificates made at test time (rcgen), for an etcd that serves TLS
//! ([`Etcd::start_tls`](crate::etcd::Etcd::start_tls)) and the clients that reach it.
//!
//! [`Certs::new`] makes a CA, a server certificate for `127.0.0.1` and `localhost`
//! (ServerAuth), a client certificate with common name `root` (ClientAuth), and a second,
//! unrelated CA for the "wrong CA" tests, and writes them as PEM files into a directory of
//! their own under the system's temporary directory, removed on drop.

use std::path::{Path, PathBuf};

use muster_etcd_backend::{Pem, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// The files the container reads, under this directory inside it.
pub(crate) const CONTAINER_DIR: &str = "/etc/muster-tls";

/// A test's certificates, as PEM files in a directory removed on drop.
#[derive(Debug)]
pub struct Certs {
    /// Where the files are.
    dir: PathBuf,
    /// The CA's certificate (PEM).
    pub ca: String,
    /// etcd's server certificate (PEM), signed by the CA.
    pub server_cert: String,
    /// Its key (PEM).
    pub server_key: String,
    /// A client certificate (PEM, CN `root`), signed by the CA.
    pub client_cert: String,
    /// Its key (PEM).
    pub client_key: String,
    /// Another CA's certificate (PEM), which signed nothing here.
    pub other_ca: String,
}

impl Certs {
    /// Makes the certificates and writes them to a fresh directory.
    pub fn new() -> Result<Certs> {
        let fail = |what: &str, err: &dyn std::fmt::Display| Error::Etcd {
            what: format!("test certificates ({what})"),
            message: err.to_string(),
        };
        let ca_key = KeyPair::generate().map_err(|e| fail("CA key", &e))?;
        let ca_settings = ca_params("muster test CA");
        let ca = ca_settings
            .self_signed(&ca_key)
            .map_err(|e| fail("CA", &e))?;
        let issuer = Issuer::new(ca_settings, ca_key);

        let server_key = KeyPair::generate().map_err(|e| fail("server key", &e))?;
        let mut server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .map_err(|e| fail("server", &e))?;
        server.distinguished_name.push(DnType::CommonName, "etcd");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .map_err(|e| fail("server", &e))?;

        let client_key = KeyPair::generate().map_err(|e| fail("client key", &e))?;
        let mut client =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("client", &e))?;
        client.distinguished_name.push(DnType::CommonName, "root");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let client_cert = client
            .signed_by(&client_key, &issuer)
            .map_err(|e| fail("client", &e))?;

        let other_key = KeyPair::generate().map_err(|e| fail("other CA key", &e))?;
        let other_ca = ca_params("another CA")
            .self_signed(&other_key)
            .map_err(|e| fail("other CA", &e))?;

        let dir = std::env::temp_dir().join(crate::docker::unique_name("tls"));
        std::fs::create_dir_all(&dir).map_err(|e| fail(&dir.display().to_string(), &e))?;
        let certs = Certs {
            dir,
            ca: ca.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
            other_ca: other_ca.pem(),
        };
        for (name, pem) in certs.files() {
            let path = certs.dir.join(name);
            std::fs::write(&path, pem).map_err(|e| fail(&path.display().to_string(), &e))?;
        }
        Ok(certs)
    }

    /// Every file by name.
    fn files(&self) -> [(&'static str, &str); 6] {
        [
            ("ca.pem", &self.ca),
            ("server.pem", &self.server_cert),
            ("server-key.pem", &self.server_key),
            ("client.pem", &self.client_cert),
            ("client-key.pem", &self.client_key),
            ("other-ca.pem", &self.other_ca),
        ]
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one file: `ca.pem`, `server.pem`, `server-key.pem`, `client.pem`,
    /// `client-key.pem`, `other-ca.pem`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// What the container needs: the CA, the server certificate and its key, by their path
    /// inside it.
    pub(crate) fn server_files(&self) -> Vec<(String, Vec<u8>)> {
        [
            ("ca.pem", &self.ca),
            ("server.pem", &self.server_cert),
            ("server-key.pem", &self.server_key),
        ]
        .into_iter()
        .map(|(name, pem)| (format!("{CONTAINER_DIR}/{name}"), pem.as_bytes().to_vec()))
        .collect()
    }

    /// Client TLS settings: this CA and the client certificate (mutual TLS), as files.
    pub fn client_tls(&self) -> TlsConfig {
        TlsConfig {
            ca: Some(Pem::File(self.path("ca.pem"))),
            cert: Some(Pem::File(self.path("client.pem"))),
            key: Some(Pem::File(self.path("client-key.pem"))),
            server_name: None,
        }
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA's parameters.
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}
