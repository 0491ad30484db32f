//! The rustls configuration of `rediss://` connections.

use std::path::Path;
use std::sync::Arc;

use msg_core::{Error, Result};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Trusts the system's certificate authorities and those in `ca`.
pub(crate) fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig> {
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
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid_config_with("TLS for Redis", e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
