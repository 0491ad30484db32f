//! The harness's private certificate authority, for the brokers' TLS
//! listeners.
//!
//! `target/brokers/tls/` holds a CA the tests trust (`ca.pem`), the
//! brokers' certificate for `127.0.0.1` and `localhost` signed by it
//! (`server.pem`, `server-key.pem`), and a second CA that signed nothing
//! the brokers show (`other-ca.pem`): a client trusting only that one must
//! refuse every broker. For mutual TLS, a client certificate of each CA
//! (`client.pem`, `client-key.pem`; `other-client.pem`,
//! `other-client-key.pem`): a broker that checks client certificates takes
//! the first and refuses the second. Made once and kept, so a broker
//! restarted under a test shows the certificate the test already trusts.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// The files of the harness's CA.
pub(crate) struct Certificates {
    pub(crate) ca: PathBuf,
    pub(crate) other_ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// Client certificates and keys: of the CA, and of the other CA.
    pub(crate) client: (PathBuf, PathBuf),
    pub(crate) other_client: (PathBuf, PathBuf),
}

impl Certificates {
    pub(crate) fn at(root: &Path) -> Self {
        let dir = root.join("tls");
        Self {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
            client: (dir.join("client.pem"), dir.join("client-key.pem")),
            other_client: (
                dir.join("other-client.pem"),
                dir.join("other-client-key.pem"),
            ),
        }
    }

    /// Makes the files unless they are all there.
    pub(crate) fn ensure(&self) -> Result<()> {
        if [
            &self.ca,
            &self.other_ca,
            &self.cert,
            &self.key,
            &self.client.0,
            &self.client.1,
            &self.other_client.0,
            &self.other_client.1,
        ]
        .iter()
        .all(|f| f.exists())
        {
            return Ok(());
        }
        let dir = self.ca.parent().context("certificate directory")?;
        fs::create_dir_all(dir)?;
        let ca = authority("msg test CA")?;
        let other = authority("msg other CA (trusted by no broker)")?;

        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        params.distinguished_name = name("msg test broker");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;

        fs::write(&self.ca, ca.pem())?;
        fs::write(&self.other_ca, other.pem())?;
        // The broker's certificate followed by its CA: a chain the brokers
        // that want one in a single file (nats-server) can use as is.
        fs::write(&self.cert, format!("{}{}", cert.pem(), ca.pem()))?;
        fs::write(&self.key, key.serialize_pem())?;
        for ((cert, key), issuer) in [(&self.client, &ca), (&self.other_client, &other)] {
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name = name("msg test client");
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let pair = KeyPair::generate()?;
            fs::write(cert, params.signed_by(&pair, issuer)?.pem())?;
            fs::write(key, pair.serialize_pem())?;
        }
        println!(
            "brokers: made a private CA and broker certificate in {}",
            dir.display()
        );
        Ok(())
    }
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    dn
}

fn authority(common: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(common);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}
