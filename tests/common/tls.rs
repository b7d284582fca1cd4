//! Test TLS material made with rcgen: one CA, a server certificate for PostgreSQL and one
//! for pgcloak's client leg (both valid for `localhost` and `127.0.0.1`), and an unrelated
//! CA that must never verify either of them.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Paths of the PEM files written by [`generate`].
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    /// A CA that signed nothing we serve: verify-full against it must fail.
    pub other_ca_cert: PathBuf,
    pub pg_cert: PathBuf,
    pub pg_key: PathBuf,
    pub proxy_cert: PathBuf,
    pub proxy_key: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

fn leaf(issuer: &Issuer<'_, &KeyPair>, name: &str) -> (String, String) {
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes the CA, the two server certificates and the unrelated CA into `dir`.
pub fn generate(dir: &Path) -> TlsFiles {
    fs::create_dir_all(dir).unwrap();
    let (ca_params, ca_key, ca_pem) = ca("pgcloak test CA");
    let (_, _, other_pem) = ca("pgcloak unrelated CA");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let (pg_cert, pg_key) = leaf(&issuer, "localhost");
    let (proxy_cert, proxy_key) = leaf(&issuer, "localhost");
    let files = TlsFiles {
        ca_cert: dir.join("ca.crt"),
        other_ca_cert: dir.join("other-ca.crt"),
        pg_cert: dir.join("pg.crt"),
        pg_key: dir.join("pg.key"),
        proxy_cert: dir.join("proxy.crt"),
        proxy_key: dir.join("proxy.key"),
    };
    fs::write(&files.ca_cert, ca_pem).unwrap();
    fs::write(&files.other_ca_cert, other_pem).unwrap();
    fs::write(&files.pg_cert, pg_cert).unwrap();
    fs::write(&files.pg_key, pg_key).unwrap();
    fs::write(&files.proxy_cert, proxy_cert).unwrap();
    fs::write(&files.proxy_key, proxy_key).unwrap();
    files
}
