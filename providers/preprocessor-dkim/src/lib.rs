//! DKIM signing (RFC 6376) as a preprocessor: outbound mail whose `From` domain it has a key
//! for leaves with a `DKIM-Signature` header field; other mail passes unchanged.
//!
//! ```toml
//! [[preprocessor]]
//! provider = "dkim"
//! config = { keys = [
//!     { domain = "example.com", selector = "s2026", key_file = "/etc/spooler/dkim/example.com.pem" },
//!     { domain = "example.org", selector = "ed2026", key_file = "/etc/spooler/dkim/example.org.pem" },
//! ] }
//! ```
//!
//! - A key file is a PEM private key: RSA (PKCS #1 or PKCS #8; signs `rsa-sha256`) or
//!   Ed25519 (PKCS #8; signs `ed25519-sha256`, RFC 8463), as `openssl genpkey` writes them.
//!   The algorithm follows from the key. Each is read once, when the instance opens: a key
//!   that cannot be read or parsed is a configuration error naming the domain and the file.
//! - Canonicalization is relaxed/relaxed, which survives the whitespace changes relays make.
//! - `headers` lists the header fields to sign (default: [`DEFAULT_HEADERS`]). A listed
//!   field the message lacks is signed as absent, so adding it on the way breaks the
//!   signature (RFC 6376 section 5.4).
//!
//! List it as the **last** preprocessor: content that another preprocessor changes after the
//! signature no longer matches it. The host signs a message once, before routing; every
//! transport then sends the same signed content. A message that cannot be signed (a key the
//! crypto library refuses at signing time) is deferred with the cause, never sent unsigned.

use std::collections::BTreeMap;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use mail_auth::AuthenticatedMessage;
use provider_abi::{
    export_library, Changes, ErrorKind, Library, MessageRef, OpenContext, Preprocessed,
    Preprocessor, ProviderError,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde::Deserialize;

/// The header fields signed unless `headers` says otherwise: those a reader sees and those
/// that identify the message.
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// One signing key per domain.
    keys: Vec<KeyConfig>,
    /// The header fields to sign.
    headers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    /// The `From` domain it signs for (`d=`).
    domain: String,
    /// The selector: the key's public half is at `<selector>._domainkey.<domain>` (`s=`).
    selector: String,
    /// The PEM file of the private key.
    key_file: String,
}

/// A domain's signer, of the key's algorithm.
enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// The preprocessor instance: a signer per domain.
pub struct DkimSigning {
    name: String,
    signers: BTreeMap<String, Signer>,
}

impl DkimSigning {
    /// Opens the instance, reading every key.
    pub fn open(context: &OpenContext) -> Result<Self, ProviderError> {
        let config: Config = context.config_as()?;
        if config.keys.is_empty() {
            return Err(context.config_error(
                "keys",
                "no key: add { domain = \"example.com\", selector = \"s1\", key_file = \"/path/key.pem\" }",
            ));
        }
        let headers: Vec<String> = config
            .headers
            .unwrap_or_else(|| DEFAULT_HEADERS.iter().map(|h| h.to_string()).collect());
        if !headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
            return Err(context.config_error(
                "headers",
                "From must be signed (RFC 6376 section 5.4.1); add it",
            ));
        }
        let mut signers = BTreeMap::new();
        for key in config.keys {
            let domain = key.domain.trim_end_matches('.').to_ascii_lowercase();
            let where_ = format!("keys (domain {domain})");
            let signer = read_signer(&key.key_file, &domain, &key.selector, &headers)
                .map_err(|why| context.config_error(&where_, why))?;
            if signers.insert(domain.clone(), signer).is_some() {
                return Err(
                    context.config_error(&where_, "a second key for the same domain; keep one")
                );
            }
        }
        Ok(DkimSigning {
            name: context.name().to_owned(),
            signers,
        })
    }
}

/// The signer for `domain` with the key in `file`.
fn read_signer(
    file: &str,
    domain: &str,
    selector: &str,
    headers: &[String],
) -> Result<Signer, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read key_file {file}: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!("key_file {file} holds no PEM private key ({e}); write one with `openssl genpkey`")
    })?;
    let rsa = |key| {
        RsaKey::<Sha256>::from_key_der(key)
            .map(|key| Signer::Rsa(signing(key, domain, selector, headers)))
    };
    let signer = match &key {
        PrivateKeyDer::Pkcs1(_) => rsa(key.clone_key()),
        PrivateKeyDer::Pkcs8(der) => match Ed25519Key::from_pkcs8_der(der.secret_pkcs8_der()) {
            Ok(ed25519) => Ok(Signer::Ed25519(signing(ed25519, domain, selector, headers))),
            Err(_) => rsa(key.clone_key()),
        },
        _ => {
            return Err(format!(
                "key_file {file}: an EC key; DKIM signs with RSA or Ed25519 keys"
            ))
        }
    };
    signer.map_err(|e| format!("key_file {file}: neither an RSA nor an Ed25519 key: {e}"))
}

/// A relaxed/relaxed signer with `key` for `domain`.
fn signing<T: SigningKey>(
    key: T,
    domain: &str,
    selector: &str,
    headers: &[String],
) -> DkimSigner<T, Done> {
    DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(headers.iter().cloned())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// The domain of the first address in `From`, lowercased.
fn from_domain(content: &[u8]) -> Option<String> {
    let message = AuthenticatedMessage::parse(content)?;
    let address = message.froms().first()?;
    let (_, domain) = address.rsplit_once('@')?;
    Some(domain.trim_end_matches('.').to_ascii_lowercase())
}

impl Preprocessor for DkimSigning {
    fn process(&mut self, message: MessageRef<'_>) -> Result<Preprocessed, ProviderError> {
        let content = message.content.as_slice();
        let Some(domain) = from_domain(content) else {
            return Ok(Preprocessed::Accept(Changes::none()));
        };
        let Some(signer) = self.signers.get(&domain) else {
            return Ok(Preprocessed::Accept(Changes::none()));
        };
        let signature = match signer {
            Signer::Rsa(signer) => signer.sign(content),
            Signer::Ed25519(signer) => signer.sign(content),
        }
        .map_err(|e| {
            ProviderError::new(
                ErrorKind::Temporary,
                format!(
                    "{}: cannot sign message {} for {domain}: {e}",
                    self.name, message.envelope.id
                ),
            )
        })?;
        let mut signed = signature.to_header().into_bytes();
        signed.extend_from_slice(content);
        log::debug!(
            "{}: message {} signed for {domain}",
            self.name,
            message.envelope.id
        );
        Ok(Preprocessed::Accept(Changes::none().with_content(signed)))
    }
}

fn library() -> Library {
    Library::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).preprocessor(
        "dkim",
        &[],
        DkimSigning::open,
    )
}

export_library!(library);

#[cfg(test)]
mod tests {
    use super::*;
    use provider_testkit::{check_preprocessor, message, open_preprocessor, process};

    /// An Ed25519 key made with `openssl genpkey -algorithm ED25519`, for these tests only.
    const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGDX1+WCMQo+v9HgCqLzvWwsV0ziaZYH9CW1yF98or4u\n-----END PRIVATE KEY-----\n";

    /// A P-256 key (`openssl ecparam -genkey | openssl pkcs8 -topk8 -nocrypt`): not for DKIM.
    const P256_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0x3ojVOsfdXFiNh/\nhicjtF+3EZMdekCSwSUnA1yUxSuhRANCAATl91er+X7sd5BqHPrnBM1XAWhrqDsO\nkkL7OoGGbbKdKoMfhOBc+XnpEYWvuRVfZoKnWGHJEoxfZfNBnESzW+8D\n-----END PRIVATE KEY-----\n";

    fn key_file(folder: &tempfile::TempDir, pem: &str) -> String {
        let path = folder.path().join("key.pem");
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    }

    fn config(key_file: &str) -> String {
        format!(
            "keys = [{{ domain = \"Example.COM\", selector = \"s1\", key_file = \"{key_file}\" }}]"
        )
    }

    #[test]
    fn keeps_the_hosts_preprocessor_contract() {
        let folder = tempfile::tempdir().unwrap();
        let config = config(&key_file(&folder, ED25519_PEM));
        check_preprocessor(library, "dkim", &config, &["SMTP:bob@example.net"]).unwrap();
    }

    #[test]
    fn mail_from_a_domain_with_a_key_is_signed_and_other_mail_passes_unchanged() {
        let folder = tempfile::tempdir().unwrap();
        let config = config(&key_file(&folder, ED25519_PEM));
        let (mut dkim, _) = open_preprocessor(library, "dkim", &config).unwrap();
        let content =
            "From: Ann <ann@example.com>\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHello.\r\n";
        let Preprocessed::Accept(changes) =
            process(&mut dkim, &message(&["SMTP:bob@example.net"], content)).unwrap()
        else {
            panic!("accepted");
        };
        let signed = String::from_utf8(changes.content.unwrap().to_vec()).unwrap();
        assert!(signed.starts_with("DKIM-Signature: "), "{signed}");
        assert!(
            signed.ends_with(content),
            "the message follows unchanged: {signed}"
        );
        for tag in [
            "a=ed25519-sha256",
            "d=example.com",
            "s=s1",
            "c=relaxed/relaxed",
        ] {
            assert!(signed.contains(tag), "{tag} in {signed}");
        }
        let other = "From: carol@example.org\r\nSubject: hi\r\n\r\nHello.\r\n";
        assert_eq!(
            process(&mut dkim, &message(&["SMTP:bob@example.net"], other)).unwrap(),
            Preprocessed::Accept(Changes::none())
        );
    }

    #[test]
    fn a_key_that_cannot_be_used_is_refused_naming_the_domain_and_the_file() {
        let refused = |config: &str| {
            let error = open_preprocessor(library, "dkim", config)
                .err()
                .expect("refused");
            assert_eq!(error.kind(), ErrorKind::Configuration, "{error}");
            error.message().to_owned()
        };
        let missing = refused(&config("/nonexistent/key.pem"));
        assert!(
            missing.contains("keys (domain example.com)")
                && missing.contains("cannot read key_file /nonexistent/key.pem"),
            "{missing}"
        );
        let folder = tempfile::tempdir().unwrap();
        let file = key_file(&folder, "not a key\n");
        let garbage = refused(&config(&file));
        assert!(garbage.contains("holds no PEM private key"), "{garbage}");
        let file = key_file(&folder, P256_PEM);
        let p256 = refused(&config(&file));
        assert!(p256.contains("neither an RSA nor an Ed25519 key"), "{p256}");
        assert!(refused("keys = []").contains("no key"));
        let file = key_file(&folder, ED25519_PEM);
        let unsigned_from = refused(&format!("{}\nheaders = [\"Subject\"]", config(&file)));
        assert!(
            unsigned_from.contains("From must be signed"),
            "{unsigned_from}"
        );
    }
}
