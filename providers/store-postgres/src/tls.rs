//! TLS to the database server, with libpq's settings and meanings: `sslmode` (`disable`,
//! `prefer`, `require`, `verify-ca`, `verify-full`), `sslrootcert` (the CA certificates that
//! may issue the server's certificate), and `sslcert`/`sslkey` (a client certificate).
//!
//! Between machines the connection carries the database password and every message, so
//! the default is `verify-full` unless the server is on this machine (loopback or a Unix
//! socket), where it is libpq's own default, `prefer`.

use std::sync::Arc;

use postgres::config::{Host, SslMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How far the server is checked, as libpq's `sslmode` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it, the certificate unchecked.
    Prefer,
    /// TLS or no connection; the certificate unchecked, unless `sslrootcert` is set (then
    /// as `verify-ca`, as libpq does).
    Require,
    /// TLS with a certificate issued by a trusted CA, for any name.
    VerifyCa,
    /// TLS with a certificate issued by a trusted CA for the name connected to.
    VerifyFull,
}

impl Mode {
    /// The mode named `name`, as libpq spells it.
    pub fn parse(name: &str) -> Result<Mode, String> {
        Ok(match name {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode: `{other}` is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                ))
            }
        })
    }

    /// The mode when none is set: `prefer` when every server is on this machine, else
    /// `verify-full`.
    pub fn default_for(hosts: &[Host]) -> Mode {
        let local = |host: &Host| match host {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|address| address.is_loopback())
            }
        };
        if hosts.iter().all(local) {
            Mode::Prefer
        } else {
            Mode::VerifyFull
        }
    }

    /// What the PostgreSQL client does before the handshake.
    pub fn negotiation(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// libpq's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings as the profile gives them.
#[derive(Default)]
pub struct Settings<'a> {
    pub mode: Option<&'a str>,
    pub root_cert: Option<&'a str>,
    pub cert: Option<&'a str>,
    pub key: Option<&'a str>,
}

/// The connector for the settings: the mode in force and the rustls client for it.
pub fn connector(
    settings: &Settings<'_>,
    hosts: &[Host],
) -> Result<(Mode, MakeRustlsConnect), String> {
    let mode = match settings.mode {
        Some(name) => Mode::parse(name)?,
        None => Mode::default_for(hosts),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match settings.root_cert {
        Some(file) => {
            let mut roots = RootCertStore::empty();
            for certificate in transport_support::tls::read_ca_file(file)
                .map_err(|e| e.replacen("ca_file", "sslrootcert", 1))?
            {
                roots
                    .add(certificate)
                    .map_err(|e| format!("sslrootcert {file}: {e}"))?;
            }
            roots
        }
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let checks = match mode {
        Mode::Require if settings.root_cert.is_some() => Checks::Issuer,
        Mode::Disable | Mode::Prefer | Mode::Require => Checks::None,
        Mode::VerifyCa => Checks::Issuer,
        Mode::VerifyFull => Checks::IssuerAndName,
    };
    let verifier = Arc::new(Verifier {
        webpki: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("sslrootcert: {e}"))?,
        provider: provider.clone(),
        checks,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (settings.cert, settings.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslcert {cert}: not a readable PEM certificate: {e}"))?;
            if chain.is_empty() {
                return Err(format!("sslcert {cert}: holds no certificate"));
            }
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("sslkey {key}: not a readable PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("sslcert {cert} and sslkey {key}: {e}"))?
        }
        _ => return Err("set both `sslcert` and `sslkey`, or neither".into()),
    };
    Ok((mode, MakeRustlsConnect::new(config)))
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy)]
enum Checks {
    /// Nothing (`prefer`, `require`): the connection is encrypted, but an attacker in the
    /// middle is not noticed.
    None,
    /// That a trusted CA issued it (`verify-ca`).
    Issuer,
    /// That a trusted CA issued it for the name connected to (`verify-full`).
    IssuerAndName,
}

/// rustls's verifier with libpq's weaker modes: the handshake's signatures are always
/// checked (they prove the server holds the certificate's key), the certificate as far as
/// the mode says.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
    checks: Checks,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = || ServerCertVerified::assertion();
        match self.checks {
            Checks::None => Ok(verified()),
            Checks::IssuerAndName => self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            // The chain is checked before the name: a name error means the chain was good.
            Checks::Issuer => match self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(verified()),
                other => other,
            },
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// If `error` is a refused server certificate: what that means for `server` and what to
/// change in the profile.
pub fn refusal(server: &str, error: &postgres::Error) -> Option<String> {
    let problem = transport_support::tls::certificate_error(error)?;
    Some(match problem {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "the TLS certificate of {server} is not issued for that name ({problem}); \
                 connect by a name it is issued for, or set sslmode = \"verify-ca\" to check \
                 only who issued it"
            )
        }
        CertificateError::UnknownIssuer => format!(
            "the TLS certificate of {server} is not trusted: no trusted CA issued it; set \
             `sslrootcert` to the certificate (PEM) of the CA that issued the server's"
        ),
        other => format!(
            "the TLS certificate of {server} is refused ({other}); check it, and `sslrootcert`"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_checks_the_server_unless_it_is_on_this_machine() {
        let tcp = |name: &str| Host::Tcp(name.into());
        assert_eq!(Mode::default_for(&[tcp("127.0.0.1")]), Mode::Prefer);
        assert_eq!(Mode::default_for(&[tcp("localhost")]), Mode::Prefer);
        assert_eq!(Mode::default_for(&[tcp("::1")]), Mode::Prefer);
        assert_eq!(
            Mode::default_for(&[Host::Unix("/run/postgresql".into())]),
            Mode::Prefer
        );
        assert_eq!(
            Mode::default_for(&[tcp("db.example.net")]),
            Mode::VerifyFull
        );
        assert_eq!(Mode::default_for(&[tcp("10.0.0.5")]), Mode::VerifyFull);
        assert_eq!(
            Mode::default_for(&[tcp("127.0.0.1"), tcp("db2.example.net")]),
            Mode::VerifyFull
        );
    }

    #[test]
    fn modes_are_spelt_as_libpq_spells_them() {
        for name in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(Mode::parse(name).unwrap().name(), name);
        }
        let error = Mode::parse("verify_full").unwrap_err();
        assert!(error.contains("`verify_full` is not one of"), "{error}");
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let settings = Settings {
            cert: Some("/etc/spooler/client.pem"),
            ..Settings::default()
        };
        let error = connector(&settings, &[]).err().expect("refused");
        assert!(error.contains("both `sslcert` and `sslkey`"), "{error}");
    }
}
