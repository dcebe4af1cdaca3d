//! The per-user CA: made on first use, checked on every load, and the leaves it signs.
//!
//! The CA's certificate carries X.509 name constraints (RFC 5280 4.2.1.10, critical): permitted
//! DNS `localhost` (which RFC 5280 reads as `localhost` and every name under it), IP
//! 127.0.0.0/8 and ::1/128. A verifier that honours them (rustls-webpki, OpenSSL, NSS, Chromium,
//! Firefox) refuses a leaf for any other name even though this CA signed it. The key is ECDSA
//! P-256, as are the leaves: signing a leaf costs tens of microseconds, so every SNI name gets
//! its own exact certificate (browsers refuse a `*.localhost` wildcard: `localhost` is a
//! public suffix for them).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use super::TlsError;

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
const LOCK_FILE: &str = "ca.lock";

/// The CA's lifetime (mkcert's choice too): long enough never to be a chore, short enough
/// that a forgotten one ends.
const CA_VALIDITY: Duration = Duration::days(3650);
/// A leaf's lifetime.
pub const LEAF_VALIDITY: Duration = Duration::days(30);
/// Leaves start a little in the past, for a client whose clock is behind.
const BACKDATE: Duration = Duration::minutes(5);

/// The CA's subject, also how it shows in trust stores.
pub const CA_NAME: &str = "stack local CA";

/// The loaded CA: its certificate and an issuer holding its key (never printed).
pub struct Ca {
    dir: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// The end of its validity: no leaf it signs outlives it.
    not_after: OffsetDateTime,
    created: bool,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of every output, debug included.
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// The CA in `dir`, made there first if neither file exists. Two `stack up`s starting at
    /// once make one CA: creation holds a lock in `dir`.
    pub fn load_or_create(dir: &Path) -> Result<Ca, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if cert_path.exists() && key_path.exists() {
            return Ca::load(dir);
        }
        create_private_dir(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| TlsError::Create {
                path: lock_path.clone(),
                source,
            })?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| TlsError::Create {
                path: lock_path,
                source: errno.into(),
            })?;
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Ca::load(dir),
            (false, false) => Ca::create(dir),
            (true, false) => Err(TlsError::HalfThere {
                path: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(TlsError::HalfThere {
                path: key_path,
                missing: cert_path,
            }),
        }
    }

    /// The CA already in `dir`, checked: the key's permissions, both files' contents, that
    /// they belong together, and the certificate's dates.
    pub fn load(dir: &Path) -> Result<Ca, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let key_meta = fs::metadata(&key_path).map_err(|source| TlsError::Unreadable {
            path: key_path.clone(),
            source,
        })?;
        let mode = key_meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TlsError::KeyPermissions {
                path: key_path,
                mode,
            });
        }
        let key_pem = fs::read_to_string(&key_path).map_err(|source| TlsError::Unreadable {
            path: key_path.clone(),
            source,
        })?;
        let cert_pem = fs::read_to_string(&cert_path).map_err(|source| TlsError::Unreadable {
            path: cert_path.clone(),
            source,
        })?;
        // rcgen's error says what it could not parse, never the key's bytes.
        let key = KeyPair::from_pem(&key_pem).map_err(|error| TlsError::Corrupt {
            path: key_path.clone(),
            what: "private key (PEM)",
            detail: error.to_string(),
        })?;
        drop(key_pem);
        let corrupt_cert = |detail: String| TlsError::Corrupt {
            path: cert_path.clone(),
            what: "CA certificate (PEM)",
            detail,
        };
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|error| corrupt_cert(error.to_string()))?;
        let cert_der = CertificateDer::from(pem.contents.clone());
        let not_after;
        {
            let x509 = pem
                .parse_x509()
                .map_err(|error| corrupt_cert(error.to_string()))?;
            if x509.public_key().raw != key.subject_public_key_info().as_slice() {
                return Err(corrupt_cert(format!(
                    "it does not belong to the key `{}`",
                    key_path.display()
                )));
            }
            if !x509.is_ca() {
                return Err(corrupt_cert("it is not a CA certificate".into()));
            }
            if let Err(found) = check_name_constraints(&x509) {
                return Err(TlsError::Unconstrained {
                    path: cert_path.clone(),
                    found,
                });
            }
            not_after = x509.validity().not_after.to_datetime();
            // One that ends within a leaf's lifetime still serves: its leaves end with it.
            if not_after <= OffsetDateTime::now_utc() {
                return Err(TlsError::Expired {
                    path: cert_path.clone(),
                    expired: not_after.date().to_string(),
                });
            }
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|error| corrupt_cert(error.to_string()))?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            cert_pem,
            cert_der,
            issuer,
            not_after,
            created: false,
        })
    }

    /// Makes a new CA in `dir` (which has neither file).
    fn create(dir: &Path) -> Result<Ca, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|error| TlsError::Issue(error.to_string()))?;
        let params = ca_params(OffsetDateTime::now_utc());
        let not_after = params.not_after;
        let cert = params
            .self_signed(&key)
            .map_err(|error| TlsError::Issue(error.to_string()))?;
        // The key first: a CA certificate without its key would be useless, a key alone is
        // reported as half there.
        write_new(
            &dir.join(CA_KEY_FILE),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        let cert_pem = cert.pem();
        write_new(&dir.join(CA_CERT_FILE), cert_pem.as_bytes(), 0o644)?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            cert_pem,
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            not_after,
            created: true,
        })
    }

    /// Whether this load made the CA.
    pub fn created(&self) -> bool {
        self.created
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ca.pem`'s path: what services get as `STACK_CA_FILE` and `NODE_EXTRA_CA_CERTS`.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// When the CA ends; within [`LEAF_VALIDITY`] of now, its leaves end with it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// A leaf for exactly `name` (a DNS name or an IP address), ECDSA P-256, valid for
    /// [`LEAF_VALIDITY`] (or until the CA ends, if that is sooner), as rustls serves it.
    pub fn issue(&self, name: &str) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
        let issue_error = |error: rcgen::Error| TlsError::Issue(format!("for `{name}`: {error}"));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(issue_error)?;
        let mut params = leaf_params(name, OffsetDateTime::now_utc()).map_err(issue_error)?;
        params.not_after = params.not_after.min(self.not_after);
        let cert = params.signed_by(&key, &self.issuer).map_err(issue_error)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = rustls::crypto::ring::sign::any_ecdsa_type(&key_der)
            .map_err(|error| TlsError::Issue(format!("for `{name}`: {error}")))?;
        Ok(Arc::new(rustls::sign::CertifiedKey::new(
            vec![cert.der().clone()],
            signing_key,
        )))
    }

    /// The CA's signing key, for tests that must show what the name constraints refuse.
    #[cfg(test)]
    pub(super) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

/// The CA's certificate: a CA for end-entity certificates only (path length 0), for local
/// names only.
pub(super) fn ca_params(now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    name.push(DnType::OrganizationName, "stack");
    if let Some(user) = std::env::var_os("USER").and_then(|user| user.into_string().ok()) {
        name.push(DnType::OrganizationalUnitName, user);
    }
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName("localhost".into()),
            GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix([127, 0, 0, 0], 8)),
            GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(
                std::net::Ipv6Addr::LOCALHOST.octets(),
                128,
            )),
        ],
        excluded_subtrees: Vec::new(),
    });
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial());
    params
}

/// The name constraints every local CA carries, as `ca_params` writes them: `Err` says what
/// the certificate has instead. A CA without them (one made by hand, or a `ca.pem` swapped
/// for another) could sign a certificate for any site, and a browser that trusts it would
/// believe it.
fn check_name_constraints(
    x509: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<(), String> {
    use x509_parser::extensions::GeneralName;
    const V4_LOOPBACK: [u8; 8] = [127, 0, 0, 0, 255, 0, 0, 0];
    let v6_loopback: [u8; 32] = {
        let mut bytes = [0xffu8; 32];
        bytes[..16].copy_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        bytes
    };
    let constraints = match x509.name_constraints() {
        Ok(Some(constraints)) => constraints.value,
        Ok(None) => return Err("no name constraints".into()),
        Err(error) => return Err(format!("unreadable name constraints ({error})")),
    };
    let permitted = constraints
        .permitted_subtrees
        .as_deref()
        .unwrap_or_default();
    let (mut dns, mut v4, mut v6) = (false, false, false);
    let mut others = Vec::new();
    for subtree in permitted {
        match &subtree.base {
            GeneralName::DNSName(name) if name.eq_ignore_ascii_case("localhost") => dns = true,
            GeneralName::IPAddress(ip) if *ip == V4_LOOPBACK => v4 = true,
            GeneralName::IPAddress(ip) if *ip == v6_loopback => v6 = true,
            other => others.push(describe_subtree(other)),
        }
    }
    if !others.is_empty() {
        return Err(format!(
            "name constraints that also permit {}",
            others.join(", ")
        ));
    }
    let missing: Vec<&str> = [(dns, "DNS `localhost`"), (v4, "127.0.0.0/8"), (v6, "::1")]
        .into_iter()
        .filter_map(|(present, what)| (!present).then_some(what))
        .collect();
    if !missing.is_empty() {
        return Err(format!("name constraints without {}", missing.join(", ")));
    }
    Ok(())
}

/// A permitted subtree as people write it: DNS `example.com`, 10.0.0.0/8.
fn describe_subtree(name: &x509_parser::extensions::GeneralName<'_>) -> String {
    use x509_parser::extensions::GeneralName;
    let prefix = |mask: &[u8]| mask.iter().map(|byte| byte.count_ones()).sum::<u32>();
    match name {
        GeneralName::DNSName(dns) => format!("DNS `{dns}`"),
        GeneralName::IPAddress(bytes) if bytes.len() == 8 => {
            let ip: [u8; 4] = bytes[..4].try_into().expect("4 of 8 bytes");
            format!("{}/{}", std::net::Ipv4Addr::from(ip), prefix(&bytes[4..]))
        }
        GeneralName::IPAddress(bytes) if bytes.len() == 32 => {
            let ip: [u8; 16] = bytes[..16].try_into().expect("16 of 32 bytes");
            format!("{}/{}", std::net::Ipv6Addr::from(ip), prefix(&bytes[16..]))
        }
        other => other.to_string(),
    }
}

/// A leaf for `name`: its one subject alternative name, for TLS servers.
pub(super) fn leaf_params(
    name: &str,
    now: OffsetDateTime,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![match name.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.to_owned().try_into()?),
    }];
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, name);
    params.distinguished_name = subject;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + LEAF_VALIDITY;
    params.serial_number = Some(random_serial());
    Ok(params)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, as DER integers for serials must be.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// `dir` and its parents, `dir` itself 0700.
fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let create = |source| TlsError::Create {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(create)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(create)
}

/// Writes `bytes` to a new file `path` with `mode` from its creation (never readable by others
/// for a moment), through a temp file renamed into place.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let error = |source| TlsError::Create {
        path: path.to_path_buf(),
        source,
    };
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(error)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(error)?;
    fs::rename(&temp, path).map_err(error)
}
