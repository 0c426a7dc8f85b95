//! Certificates for the TLS tests, made by the test itself: a private CA and a server
//! certificate it issues, as the PEM files a server's configuration and a profile's
//! `ca_file` name. No public CA trusts them, so they also show an untrusted certificate.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A private CA's certificate, and a server certificate and key it issued.
pub struct Certificates {
    /// The CA's certificate (PEM): what `ca_file` names to trust the server.
    pub ca_file: PathBuf,
    /// The server's certificate (PEM).
    pub cert_file: PathBuf,
    /// The server's private key (PEM).
    pub key_file: PathBuf,
    /// A client certificate from the same CA, issued to `spooler` (its common name, which
    /// PostgreSQL's `cert` authentication takes as the role), for servers that ask for one.
    pub client_cert_file: PathBuf,
    /// The client certificate's private key (PEM).
    pub client_key_file: PathBuf,
}

impl Certificates {
    /// A new CA, and a certificate from it for `names` (host names or IP addresses), written
    /// into `folder` (created).
    pub fn issue(folder: &Path, names: &[&str]) -> Certificates {
        fs::create_dir_all(folder).expect("creating the certificates' folder");
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "spooler test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca.self_signed(&ca_key).expect("the CA's certificate");

        let server_key = KeyPair::generate().expect("a server key");
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut server = CertificateParams::new(names.clone()).expect("server parameters");
        server.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let server = server
            .signed_by(&server_key, &ca, &ca_key)
            .expect("the server's certificate");

        let client_key = KeyPair::generate().expect("a client key");
        let mut client = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        client
            .distinguished_name
            .push(DnType::CommonName, "spooler");
        let client = client
            .signed_by(&client_key, &ca, &ca_key)
            .expect("the client's certificate");

        let write = |name: &str, pem: String| {
            let file = folder.join(name);
            fs::write(&file, pem).expect("writing a PEM file");
            file
        };
        Certificates {
            ca_file: write("ca.pem", ca.pem()),
            cert_file: write("server.pem", server.pem()),
            key_file: write("server.key", server_key.serialize_pem()),
            client_cert_file: write("client.pem", client.pem()),
            client_key_file: write("client.key", client_key.serialize_pem()),
        }
    }
}
