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

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
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
        RsaKey::<Sha256>::from_key_der(key).map(|key| {
            Signer::Rsa(
                DkimSigner::from_key(key)
                    .domain(domain)
                    .selector(selector)
                    .headers(headers.iter().cloned())
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed),
            )
        })
    };
    let signer = match &key {
        PrivateKeyDer::Pkcs1(_) => rsa(key.clone_key()),
        PrivateKeyDer::Pkcs8(der) => match Ed25519Key::from_pkcs8_der(der.secret_pkcs8_der()) {
            Ok(ed25519) => Ok(Signer::Ed25519(
                DkimSigner::from_key(ed25519)
                    .domain(domain)
                    .selector(selector)
                    .headers(headers.iter().cloned())
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed),
            )),
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
