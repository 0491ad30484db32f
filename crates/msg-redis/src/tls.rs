//! The rustls configuration of `rediss://` connections.

use std::path::Path;
use std::sync::Arc;

use msg_core::{Error, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Trusts the system's certificate authorities and those in `ca`; shows
/// the certificate and key of `client` (PEM files) when given.
pub(crate) fn client_config(
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    // A system store that cannot be read, or holds certificates rustls
    // cannot parse, leaves the rest usable; `ca` is what must work.
    let (_, ignored) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if ignored > 0 {
        tracing::debug!(ignored, "system certificates rustls cannot use");
    }
    if let Some(path) = ca {
        let bad = |why: String| Error::invalid_config(format!("tls_ca {}: {why}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in the file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    // The provider is named rather than taken from the process default,
    // which is ambiguous when the application links another one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid_config_with("TLS for Redis", e))?
        .with_root_certificates(roots);
    let Some((cert, key)) = client else {
        return Ok(builder.with_no_client_auth());
    };
    let bad = |option: &str, path: &Path, why: String| {
        Error::invalid_config(format!("{option} {}: {why}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("tls_cert", cert, e.to_string()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad("tls_cert", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(
            "tls_cert",
            cert,
            "no PEM certificate in the file".into(),
        ));
    }
    // The key's bytes never go into an error: only what is wrong.
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad("tls_key", key, format!("no usable PEM private key ({e})")))?;
    builder
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| bad("tls_key", key, format!("does not go with tls_cert: {e}")))
}
