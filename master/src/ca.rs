//! The cluster CA (`--cluster-ca`): a self-signed CA made at the master's first start in
//! `DATA_DIR/ca/` (`ca.pem`, and `ca.key` with mode 0600), which signs the agents' CSRs
//! (`POST /agent/v1/certificate`) and the master's own certificate (made anew at every
//! start: the API's server certificate unless `--tls-cert` is given, and the client
//! certificate the log proxy shows agents). Every name a CSR asks for is checked here:
//! the CSR proves its key (its signature), but the names, usages and validity of what is
//! signed are the master's, never the CSR's.
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// Under the master's data dir.
pub const CA_DIR: &str = "ca";
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
/// An agent's certificate lives this long; the agent renews it past 2/3 of its life.
pub const NODE_CERT_LIFETIME: Duration = Duration::days(30);
/// The master's own certificate, made anew at every start.
pub const MASTER_CERT_LIFETIME: Duration = Duration::days(365);
const CA_LIFETIME: Duration = Duration::days(3650);
/// Issued certificates start this much in the past: agents' clocks differ a little.
const BACKDATE: Duration = Duration::minutes(5);
/// Subject alternative names one certificate may carry.
pub const MAX_NAMES: usize = 16;
/// A DNS name's longest form (RFC 1035).
const MAX_NAME_LEN: usize = 253;
/// A P-256 or RSA-4096 CSR with [`MAX_NAMES`] names is far below this.
pub const MAX_CSR_BYTES: usize = 16 * 1024;
pub use plinth_protocol::agent::MASTER_COMMON_NAME;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a PEM CA certificate and key made by plinth")]
    Parse { path: PathBuf, source: rcgen::Error },
    #[error("{present} exists but {missing} does not: restore it, or remove both to make a new CA")]
    Incomplete { present: PathBuf, missing: PathBuf },
    #[error("cannot make a certificate")]
    Generate { source: rcgen::Error },
    #[error("--tls-san {name}: {reason}")]
    BadName { name: String, reason: String },
    #[error("cannot make the client of agents' APIs: {reason}")]
    Client { reason: String },
}

/// Why a CSR is refused (the agent gets it in a 422's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is larger than {MAX_CSR_BYTES} bytes")]
    TooLarge,
    #[error("the CSR is not a PEM certificate request with a valid signature ({reason})")]
    Unreadable { reason: String },
    #[error("the CSR's subject has no common name (the agent's hostname)")]
    NoCommonName,
    #[error("the CSR's name {name:?} is not allowed: {reason}")]
    BadName { name: String, reason: String },
    #[error("the CSR asks for {count} names; at most {MAX_NAMES} are signed")]
    TooManyNames { count: usize },
    #[error("the CSR asks for an e-mail address, URI or other name; only DNS names and IP addresses are signed")]
    UnsupportedName,
    #[error("cannot sign the CSR ({reason})")]
    Sign { reason: String },
}

/// The cluster's CA: its certificate as stored (what clients trust and fingerprint) and
/// its key.
pub struct ClusterCa {
    /// Rebuilt from the stored certificate's subject and key identifier: only used to sign.
    issuer: rcgen::Certificate,
    key: KeyPair,
    pem: String,
    der: CertificateDer<'static>,
    fingerprint: String,
}

/// A certificate signed for an agent's CSR.
#[derive(Debug, Clone)]
pub struct NodeCertificate {
    pub pem: String,
    pub common_name: String,
    pub names: Vec<String>,
    pub serial: String,
    pub not_after: OffsetDateTime,
}

/// A certificate with its freshly made key (the master's own).
pub struct KeyedCertificate {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Certificate and key in one PEM text (reqwest's `Identity::from_pem`).
    pub pem: String,
}

impl ClusterCa {
    /// Loads the CA of `data_dir`, or makes one when there is none yet (`true` then).
    pub fn load_or_create(data_dir: &Path) -> Result<(ClusterCa, bool), CaError> {
        let dir = data_dir.join(CA_DIR);
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Ok((ClusterCa::load(&cert_path, &key_path)?, false)),
            (true, false) => Err(CaError::Incomplete { present: cert_path, missing: key_path }),
            (false, true) => Err(CaError::Incomplete { present: key_path, missing: cert_path }),
            (false, false) => Ok((ClusterCa::create(&dir, &cert_path, &key_path)?, true)),
        }
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<ClusterCa, CaError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| CaError::Read { path: path.to_path_buf(), source })
        };
        let (pem, key_pem) = (read(cert_path)?, read(key_path)?);
        let key = KeyPair::from_pem(&key_pem).map_err(|source| CaError::Parse { path: key_path.into(), source })?;
        let parse = |source| CaError::Parse { path: cert_path.into(), source };
        let issuer = CertificateParams::from_ca_cert_pem(&pem).and_then(|p| p.self_signed(&key)).map_err(parse)?;
        let der = pem_to_der(&pem).ok_or(rcgen::Error::CouldNotParseCertificate).map_err(parse)?;
        Ok(ClusterCa::from_parts(issuer, key, pem, der))
    }

    fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<ClusterCa, CaError> {
        let generate = |source| CaError::Generate { source };
        let key = KeyPair::generate().map_err(generate)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "plinth");
        params.distinguished_name.push(DnType::CommonName, "Plinth cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_LIFETIME;
        params.serial_number = Some(random_serial().map_err(generate)?);
        let issuer = params.self_signed(&key).map_err(generate)?;
        std::fs::create_dir_all(dir).map_err(|source| CaError::Write { path: dir.to_path_buf(), source })?;
        // The key first: a crash in between leaves a key without a certificate, which
        // load_or_create reports instead of silently making a second CA.
        write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        let pem = issuer.pem();
        write_file(cert_path, pem.as_bytes(), 0o644)?;
        let der = issuer.der().clone();
        Ok(ClusterCa::from_parts(issuer, key, pem, der))
    }

    fn from_parts(issuer: rcgen::Certificate, key: KeyPair, pem: String, der: CertificateDer<'static>) -> ClusterCa {
        let fingerprint = fingerprint(&der);
        ClusterCa { issuer, key, pem, der, fingerprint }
    }

    /// The CA certificate (PEM), as `GET /v1/ca.pem` serves it.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// `sha256:` and the hex SHA-256 of the CA certificate (DER).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Signs an agent's CSR: the CSR's key, with the CSR's names once checked, for
    /// client and server authentication (the agent's API is served with it too), valid
    /// for [`NODE_CERT_LIFETIME`] from `now`.
    pub fn sign_node_csr(&self, csr_pem: &str, now: OffsetDateTime) -> Result<NodeCertificate, CsrError> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(CsrError::TooLarge);
        }
        // Parsing verifies the CSR's signature: its sender holds the key.
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CsrError::Unreadable { reason: e.to_string() })?;
        let common_name = common_name_of(&csr.params.distinguished_name).ok_or(CsrError::NoCommonName)?;
        check_node_name(&common_name)?;
        let requested = &csr.params.subject_alt_names;
        if requested.len() > MAX_NAMES {
            return Err(CsrError::TooManyNames { count: requested.len() });
        }
        let mut names = Vec::with_capacity(requested.len());
        let mut subject_alt_names = Vec::with_capacity(requested.len());
        for san in requested {
            match san {
                SanType::DnsName(name) => {
                    check_dns_name(name.as_str())?;
                    names.push(name.as_str().to_string());
                }
                SanType::IpAddress(ip) => {
                    check_ip(*ip)?;
                    names.push(ip.to_string());
                }
                _ => return Err(CsrError::UnsupportedName),
            }
            subject_alt_names.push(san.clone());
        }
        let sign = |e: rcgen::Error| CsrError::Sign { reason: e.to_string() };
        let serial = random_serial().map_err(sign)?;
        let mut params = leaf_params(&common_name, subject_alt_names, now, NODE_CERT_LIFETIME);
        params.serial_number = Some(serial.clone());
        let not_after = params.not_after;
        let cert = params.signed_by(&csr.public_key, &self.issuer, &self.key).map_err(sign)?;
        Ok(NodeCertificate { pem: cert.pem(), common_name, names, serial: serial.to_string(), not_after })
    }

    /// The master's own certificate and key for `names` (DNS names or IP addresses).
    pub fn issue_master(&self, names: &[String], now: OffsetDateTime) -> Result<KeyedCertificate, CaError> {
        let generate = |source| CaError::Generate { source };
        let mut subject_alt_names = Vec::new();
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    check_dns_name(name).map_err(|e| CaError::BadName { name: name.clone(), reason: e.to_string() })?;
                    SanType::DnsName(name.as_str().try_into().map_err(generate)?)
                }
            };
            if !subject_alt_names.contains(&san) {
                subject_alt_names.push(san);
            }
        }
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = leaf_params(MASTER_COMMON_NAME, subject_alt_names, now, MASTER_CERT_LIFETIME);
        params.serial_number = Some(random_serial().map_err(generate)?);
        let cert = params.signed_by(&key, &self.issuer, &self.key).map_err(generate)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        Ok(KeyedCertificate { chain: vec![cert.der().clone()], key: key_der, pem })
    }
}

/// Parameters of a certificate the CA signs for a node or the master.
fn leaf_params(
    common_name: &str,
    subject_alt_names: Vec<SanType>,
    now: OffsetDateTime,
    lifetime: Duration,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "plinth");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.subject_alt_names = subject_alt_names;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    params
}

/// The subject common name of a DER certificate (an agent's hostname, for the master).
pub fn certificate_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(name)
}

/// `sha256:` and the lower-case hex SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn common_name_of(name: &DistinguishedName) -> Option<String> {
    match name.get(&DnType::CommonName)? {
        DnValue::Utf8String(s) => Some(s.clone()),
        DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        DnValue::Ia5String(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// An agent's hostname as the common name: what `/master/slaves` shows, so kept to the
/// characters of host names.
fn check_node_name(name: &str) -> Result<(), CsrError> {
    let bad = |reason: &str| Err(CsrError::BadName { name: name.chars().take(80).collect(), reason: reason.into() });
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("a name has 1 to 253 characters");
    }
    if name == MASTER_COMMON_NAME {
        return bad("it is the master's own name");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
        return bad("only letters, digits, '-', '.' and '_'");
    }
    if name.starts_with(['-', '.']) {
        return bad("it cannot start with '-' or '.'");
    }
    Ok(())
}

/// A DNS name: dot-separated labels of letters, digits and inner hyphens.
fn check_dns_name(name: &str) -> Result<(), CsrError> {
    let bad = |reason: &str| Err(CsrError::BadName { name: name.chars().take(80).collect(), reason: reason.into() });
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("a DNS name has 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("every label has 1 to 63 characters");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return bad("labels are letters, digits and inner '-' (no wildcards)");
        }
    }
    Ok(())
}

fn check_ip(ip: IpAddr) -> Result<(), CsrError> {
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(CsrError::BadName { name: ip.to_string(), reason: "not a host address".into() });
    }
    Ok(())
}

/// A random positive 128-bit serial number (RFC 5280: unique per CA, at most 20 bytes).
fn random_serial() -> Result<SerialNumber, rcgen::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| rcgen::Error::RingUnspecified)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn pem_to_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).ok()
}

/// Writes `bytes` to a temporary file with `mode`, syncs it and renames it over `path`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write = |source| CaError::Write { path: path.to_path_buf(), source };
    let temp = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&temp).map_err(write)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(write)?;
    std::fs::rename(&temp, path).map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn csr(common_name: &str, names: &[&str]) -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        (key, pem)
    }

    fn new_ca() -> (tempfile::TempDir, ClusterCa) {
        let dir = tempfile::tempdir().unwrap();
        let (ca, created) = ClusterCa::load_or_create(dir.path()).unwrap();
        assert!(created);
        (dir, ca)
    }

    #[test]
    fn the_ca_is_made_once_with_a_private_key_and_loaded_back_with_the_same_fingerprint() {
        let (dir, ca) = new_ca();
        let key = dir.path().join(CA_DIR).join(CA_KEY_FILE);
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, created) = ClusterCa::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(again.fingerprint(), ca.fingerprint());
        assert_eq!(again.pem(), ca.pem());
        assert!(ca.fingerprint().starts_with("sha256:") && ca.fingerprint().len() == 7 + 64);
        // A certificate signed by the reloaded CA names the stored CA as its issuer.
        let (_, request) = csr("agent-1", &["agent-1"]);
        let issued = again.sign_node_csr(&request, OffsetDateTime::now_utc()).unwrap();
        let (_, leaf) = x509_parser::pem::parse_x509_pem(issued.pem.as_bytes()).unwrap();
        let leaf = leaf.parse_x509().unwrap();
        let (_, root) = x509_parser::parse_x509_certificate(ca.der()).unwrap();
        assert_eq!(leaf.issuer(), root.subject());
        assert!(leaf.verify_signature(Some(root.public_key())).is_ok(), "signed by the stored CA's key");

        std::fs::remove_file(dir.path().join(CA_DIR).join(CA_CERT_FILE)).unwrap();
        let err = ClusterCa::load_or_create(dir.path()).err().unwrap();
        assert!(matches!(err, CaError::Incomplete { .. }), "no silent second CA: {err}");
    }

    #[test]
    fn the_csrs_key_is_what_gets_signed_with_the_masters_usages_and_validity() {
        let (_dir, ca) = new_ca();
        let (key, request) = csr("agent-1", &["agent-1", "10.0.0.7"]);
        let now = OffsetDateTime::now_utc();
        let issued = ca.sign_node_csr(&request, now).unwrap();
        assert_eq!(issued.common_name, "agent-1");
        assert_eq!(issued.names, ["agent-1", "10.0.0.7"]);
        let (_, pem) = x509_parser::pem::parse_x509_pem(issued.pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
        assert_eq!(certificate_common_name(&pem.contents).as_deref(), Some("agent-1"));
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth && !eku.any);
        assert!(!cert.is_ca());
        let life = cert.validity().not_after.timestamp() - now.unix_timestamp();
        assert!((NODE_CERT_LIFETIME.whole_seconds() - 5..=NODE_CERT_LIFETIME.whole_seconds()).contains(&life));
    }

    #[test]
    fn names_are_checked_and_bounded() {
        let (_dir, ca) = new_ca();
        let now = OffsetDateTime::now_utc();
        let refused = |cn: &str, names: &[&str]| ca.sign_node_csr(&csr(cn, names).1, now).unwrap_err();
        assert!(matches!(refused("agent 1", &[]), CsrError::BadName { .. }));
        assert!(matches!(refused("", &[]), CsrError::BadName { .. } | CsrError::NoCommonName));
        assert!(matches!(refused(MASTER_COMMON_NAME, &[]), CsrError::BadName { .. }));
        assert!(matches!(refused(&"a".repeat(300), &[]), CsrError::BadName { .. }));
        assert!(matches!(refused("agent-1", &["*.example.org"]), CsrError::BadName { .. }));
        assert!(matches!(refused("agent-1", &["0.0.0.0"]), CsrError::BadName { .. }));
        let many: Vec<String> = (0..=MAX_NAMES).map(|i| format!("n{i}.example")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(refused("agent-1", &many), CsrError::TooManyNames { count: MAX_NAMES + 1 });
        let mut garbage = ca.sign_node_csr("not a CSR", now).unwrap_err();
        assert!(matches!(garbage, CsrError::Unreadable { .. }), "{garbage}");
        garbage = ca.sign_node_csr(&"x".repeat(MAX_CSR_BYTES + 1), now).unwrap_err();
        assert_eq!(garbage, CsrError::TooLarge);
        // A CSR whose signature does not match its key proves nothing.
        let (_, good) = csr("agent-1", &[]);
        let tampered = tamper(&good);
        assert!(matches!(ca.sign_node_csr(&tampered, now).unwrap_err(), CsrError::Unreadable { .. }));
    }

    /// The CSR with one bit of its signature flipped.
    fn tamper(pem: &str) -> String {
        use base64::Engine;
        use rustls::pki_types::pem::PemObject;
        let mut der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec();
        let last = der.len() - 1;
        der[last] ^= 1;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n")
    }

    #[test]
    fn the_masters_certificate_names_its_addresses_and_refuses_a_bad_extra_name() {
        let (_dir, ca) = new_ca();
        let names = ["master".to_string(), "127.0.0.1".to_string(), "127.0.0.1".to_string()];
        let issued = ca.issue_master(&names, OffsetDateTime::now_utc()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.chain[0]).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names.len(), 2, "duplicates are named once: {:?}", san.general_names);
        assert_eq!(certificate_common_name(&issued.chain[0]).as_deref(), Some(MASTER_COMMON_NAME));
        let err = ca.issue_master(&["bad name".into()], OffsetDateTime::now_utc()).err().unwrap();
        assert!(err.to_string().contains("--tls-san bad name"), "{err}");
    }
}
