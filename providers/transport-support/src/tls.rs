//! Trust for TLS connections: the client configuration (the built-in public roots, or
//! exactly the CA certificates of `ca_file`), and a refused server certificate told in
//! words an operator can act on.

use std::error::Error;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// A TLS client configuration that verifies servers against Mozilla's public roots (built
/// in) or, with `ca_file`, against exactly the CA certificates in that file.
pub fn client_config(ca_file: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(file) => {
            for certificate in read_ca_file(file)? {
                roots
                    .add(certificate)
                    .map_err(|e| format!("ca_file {file}: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The CA certificates in the PEM file `path`; an error names the file and what is wrong.
pub fn read_ca_file(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("ca_file {path}: cannot read it: {e}"))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_file {path}: not a PEM certificate file: {e}"))?;
    if certificates.is_empty() {
        return Err(format!(
            "ca_file {path}: holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)"
        ));
    }
    Ok(certificates)
}

/// If `error` (or one of its causes) is a refused server certificate: what that means for
/// `server` and what to do about it.
pub fn certificate_refusal(server: &str, error: &(dyn Error + 'static)) -> Option<String> {
    let problem = certificate_error(error)?;
    let text = match problem {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "the TLS certificate of {server} does not match the name connected to ({problem}); \
                 set `host` to a name the certificate is issued for"
            )
        }
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => format!(
            "the TLS certificate of {server} is not valid now ({problem}); the server needs a current certificate"
        ),
        CertificateError::UnknownIssuer => format!(
            "the TLS certificate of {server} is not trusted: no trusted CA issued it; if the \
             server uses a private or self-signed CA, set `ca_file` to that CA's certificate (PEM)"
        ),
        _ => format!(
            "the TLS certificate of {server} is not trusted ({problem}); if the server uses a \
             private or self-signed CA, set `ca_file` to that CA's certificate (PEM)"
        ),
    };
    Some(text)
}

/// The certificate error in `error`'s chain of causes, looking inside I/O errors too (a TLS
/// stream reports its handshake failures as I/O errors wrapping rustls's).
pub fn certificate_error<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a CertificateError> {
    let mut next = Some(error);
    while let Some(current) = next {
        let inner = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn Error + 'static))
            .unwrap_or(current);
        if let Some(rustls::Error::InvalidCertificate(problem)) =
            inner.downcast_ref::<rustls::Error>()
        {
            return Some(problem);
        }
        next = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_issuer_inside_an_io_error_says_to_set_ca_file() {
        let error = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let text = certificate_refusal("mail.example.com:995", &error).unwrap();
        assert!(text.contains("mail.example.com:995"), "{text}");
        assert!(text.contains("not trusted"), "{text}");
        assert!(text.contains("ca_file"), "{text}");
    }

    #[test]
    fn a_name_mismatch_says_which_name() {
        let error = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        let text = certificate_refusal("127.0.0.1:995", &error).unwrap();
        assert!(text.contains("does not match the name"), "{text}");
    }

    #[test]
    fn other_errors_are_not_certificate_refusals() {
        let error = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(certificate_refusal("x:110", &error).is_none());
    }

    #[test]
    fn the_client_trusts_the_public_roots_or_the_ca_file() {
        assert!(client_config(None).is_ok());
        let missing = client_config(Some("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            missing.contains("ca_file /nonexistent/ca.pem: cannot read it"),
            "{missing}"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let folder = std::env::temp_dir().join(format!("pop3-ca-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let empty = folder.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = read_ca_file(empty.to_str().unwrap()).unwrap_err();
        assert!(
            error.contains("empty.pem") && error.contains("no certificate"),
            "{error}"
        );
        let missing = read_ca_file("/nonexistent/ca.pem").unwrap_err();
        assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
        std::fs::remove_dir_all(folder).ok();
    }
}
