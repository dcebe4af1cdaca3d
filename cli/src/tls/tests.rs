use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::ca::{ca_params, leaf_params};
use super::*;

fn verifier(ca: &Ca) -> Arc<rustls::client::WebPkiServerVerifier> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.cert_der().clone())
        .expect("the CA is a valid root");
    rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .build()
        .expect("a verifier")
}

fn rustls_verifies(ca: &Ca, leaf: &CertificateDer<'static>, name: &str) -> Result<(), String> {
    verifier(ca)
        .verify_server_cert(
            leaf,
            &[],
            &ServerName::try_from(name.to_owned()).expect("a server name"),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// `openssl verify` of `leaf` against the CA alone; its output.
fn openssl_verify(
    ca: &Ca,
    leaf: &CertificateDer<'static>,
    dir: &std::path::Path,
) -> (bool, String) {
    let leaf_path = dir.join("leaf.pem");
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_lines(leaf.as_ref())
    );
    std::fs::write(&leaf_path, pem).unwrap();
    let output = Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(ca.cert_path())
        .arg(&leaf_path)
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn base64_lines(bytes: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    text.as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_new_ca_is_private_and_constrained_to_local_names() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("stack");
    let ca = Ca::load_or_create(&dir).unwrap();
    assert!(ca.created());
    let mode = |name: &str| {
        std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(CA_KEY_FILE), 0o600);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(ca.cert_path())
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("X509v3 Name Constraints: critical"), "{text}");
    let permitted = text.split("Permitted:").nth(1).expect("a Permitted list");
    assert!(permitted.contains("DNS:localhost"), "{text}");
    assert!(permitted.contains("IP:127.0.0.0/255.0.0.0"), "{text}");
    assert!(
        permitted.contains("IP:0:0:0:0:0:0:0:1/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF"),
        "{text}"
    );
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");

    // Loaded again: the same CA, not a new one.
    let again = Ca::load_or_create(&dir).unwrap();
    assert!(!again.created());
    assert_eq!(again.cert_pem(), ca.cert_pem());
}

#[test]
fn leaves_for_local_names_verify_in_rustls_and_openssl() {
    let home = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(home.path()).unwrap();
    for name in [
        "localhost",
        "writer-abcdefghij.localhost",
        "counter-demo.localhost",
    ] {
        let leaf = ca.issue(name).unwrap();
        assert_eq!(rustls_verifies(&ca, &leaf.cert[0], name), Ok(()), "{name}");
        let (ok, text) = openssl_verify(&ca, &leaf.cert[0], home.path());
        assert!(ok, "{name}: {text}");
    }
    // A leaf is for its own name only.
    let leaf = ca.issue("writer-abcdefghij.localhost").unwrap();
    assert!(rustls_verifies(&ca, &leaf.cert[0], "reader.localhost").is_err());
}

#[test]
fn a_leaf_for_another_name_signed_with_the_ca_key_fails_verification() {
    let home = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(home.path()).unwrap();
    // What a thief of `ca-key.pem` would make: a leaf for example.com, properly signed.
    let key = rcgen::KeyPair::generate().unwrap();
    let forged = leaf_params("example.com", time::OffsetDateTime::now_utc())
        .unwrap()
        .signed_by(&key, ca.issuer())
        .unwrap();
    let forged = forged.der().clone();
    let refused = rustls_verifies(&ca, &forged, "example.com").unwrap_err();
    assert!(
        refused.contains("NameConstraintViolation") || refused.contains("name constraint"),
        "{refused}"
    );
    let (ok, text) = openssl_verify(&ca, &forged, home.path());
    assert!(!ok, "{text}");
    assert!(text.contains("permitted subtree violation"), "{text}");
}

#[test]
fn a_key_others_can_read_is_refused_naming_the_file_and_the_fix() {
    let home = tempfile::tempdir().unwrap();
    Ca::load_or_create(home.path()).unwrap();
    let key = home.path().join(CA_KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let error = Ca::load_or_create(home.path()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "`{}` can be read by other users (mode 640); it is the local CA's private key",
            key.display()
        )
    );
    assert!(
        error
            .hint()
            .starts_with(&format!("Run `chmod 600 {}`", key.display())),
        "{}",
        error.hint()
    );
}

#[test]
fn a_corrupt_half_there_or_expired_ca_is_an_error_naming_the_file() {
    let home = tempfile::tempdir().unwrap();
    Ca::load_or_create(home.path()).unwrap();
    let cert = home.path().join(CA_CERT_FILE);
    let good = std::fs::read_to_string(&cert).unwrap();

    std::fs::write(&cert, "not a certificate\n").unwrap();
    let error = Ca::load_or_create(home.path()).unwrap_err();
    assert!(matches!(error, TlsError::Corrupt { .. }), "{error}");
    assert!(
        error.to_string().starts_with(&format!(
            "`{}` is not a valid CA certificate",
            cert.display()
        )),
        "{error}"
    );
    assert!(error.hint().contains("Delete `"), "{}", error.hint());

    std::fs::remove_file(&cert).unwrap();
    let error = Ca::load_or_create(home.path()).unwrap_err();
    assert!(matches!(error, TlsError::HalfThere { .. }), "{error}");

    // A certificate of another key.
    let other = tempfile::tempdir().unwrap();
    Ca::load_or_create(other.path()).unwrap();
    std::fs::copy(other.path().join(CA_CERT_FILE), &cert).unwrap();
    let error = Ca::load_or_create(home.path()).unwrap_err();
    assert!(
        error.to_string().contains("does not belong to the key"),
        "{error}"
    );

    // Expired: the same key, dates in the past.
    std::fs::write(&cert, &good).unwrap();
    let key_pem = std::fs::read_to_string(home.path().join(CA_KEY_FILE)).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let mut params = ca_params(time::OffsetDateTime::now_utc() - time::Duration::days(400));
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    std::fs::write(&cert, params.self_signed(&key).unwrap().pem()).unwrap();
    let error = Ca::load_or_create(home.path()).unwrap_err();
    assert!(matches!(error, TlsError::Expired { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("the local CA `{}` expired on ", cert.display())),
        "{error}"
    );
}

#[test]
fn the_resolver_serves_local_names_only_from_a_bounded_cache() {
    let home = tempfile::tempdir().unwrap();
    let resolver = LeafResolver::new(Arc::new(Ca::load_or_create(home.path()).unwrap()));
    for refused in [
        "example.com",
        "localhost.example.com",
        ".localhost",
        "xlocalhost",
    ] {
        assert!(resolver.leaf_for(refused).is_none(), "{refused}");
    }
    let first = resolver.leaf_for("Writer.localhost").unwrap();
    let again = resolver.leaf_for("writer.localhost").unwrap();
    assert!(Arc::ptr_eq(&first, &again), "a cached leaf is served again");
    for n in 0..resolver::CACHE_CAPACITY + 10 {
        resolver.leaf_for(&format!("name-{n}.localhost")).unwrap();
    }
    assert_eq!(resolver.n_cached(), resolver::CACHE_CAPACITY);
}

/// A CA made by hand with `openssl req` (no name constraints) in `dir`, its key 0600.
fn openssl_ca(dir: &std::path::Path) {
    let output = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "365",
            "-subj",
            "/CN=my own CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-keyout",
        ])
        .arg(dir.join(CA_KEY_FILE))
        .arg("-out")
        .arg(dir.join(CA_CERT_FILE))
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    assert!(output.status.success(), "{output:?}");
    std::fs::set_permissions(
        dir.join(CA_KEY_FILE),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

#[test]
fn a_ca_without_the_local_name_constraints_is_refused_with_the_fix() {
    let home = tempfile::tempdir().unwrap();
    openssl_ca(home.path());
    let cert = home.path().join(CA_CERT_FILE);
    let error = Ca::load_or_create(home.path()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "the local CA `{}` has no name constraints: it must permit only `localhost` names, 127.0.0.0/8 and ::1",
            cert.display()
        )
    );
    assert_eq!(
        error.hint(),
        format!(
            "It was not made by stack, or was changed: run `stack trust --uninstall` (if `stack trust` installed it), delete `{}` and `{}`, then `stack trust` again (it makes a new CA). Or run with `--no-https`.",
            cert.display(),
            home.path().join(CA_KEY_FILE).display()
        )
    );

    // Made with rcgen and the same key: constraints that permit more, or fewer.
    let key_pem = std::fs::read_to_string(home.path().join(CA_KEY_FILE)).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let mut params = ca_params(time::OffsetDateTime::now_utc());
    params.name_constraints = None;
    std::fs::write(&cert, params.self_signed(&key).unwrap().pem()).unwrap();
    let error = Ca::load(home.path()).unwrap_err();
    assert!(matches!(error, TlsError::Unconstrained { .. }), "{error}");

    let mut params = ca_params(time::OffsetDateTime::now_utc());
    let constraints = params.name_constraints.as_mut().unwrap();
    constraints
        .permitted_subtrees
        .push(rcgen::GeneralSubtree::DnsName("example.com".into()));
    std::fs::write(&cert, params.self_signed(&key).unwrap().pem()).unwrap();
    let error = Ca::load(home.path()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("has name constraints that also permit DNS `example.com`:"),
        "{error}"
    );

    let mut params = ca_params(time::OffsetDateTime::now_utc());
    params
        .name_constraints
        .as_mut()
        .unwrap()
        .permitted_subtrees
        .truncate(1);
    std::fs::write(&cert, params.self_signed(&key).unwrap().pem()).unwrap();
    let error = Ca::load(home.path()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("has name constraints without 127.0.0.0/8, ::1:"),
        "{error}"
    );

    // stack's own, with the same key, loads.
    let params = ca_params(time::OffsetDateTime::now_utc());
    std::fs::write(&cert, params.self_signed(&key).unwrap().pem()).unwrap();
    Ca::load(home.path()).unwrap();
}

#[test]
fn a_ca_ending_within_a_leafs_lifetime_still_serves_and_its_leaves_end_with_it() {
    let home = tempfile::tempdir().unwrap();
    Ca::load_or_create(home.path()).unwrap();
    let key_pem = std::fs::read_to_string(home.path().join(CA_KEY_FILE)).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let mut params = ca_params(time::OffsetDateTime::now_utc() - time::Duration::days(3640));
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
    let ca_end = params.not_after;
    std::fs::write(
        home.path().join(CA_CERT_FILE),
        params.self_signed(&key).unwrap().pem(),
    )
    .unwrap();
    let ca = Ca::load(home.path()).unwrap();
    assert_eq!(ca.not_after().unix_timestamp(), ca_end.unix_timestamp());
    let leaf = ca.issue("app.localhost").unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf.cert[0].as_ref()).unwrap();
    let leaf_end = leaf.validity().not_after.to_datetime();
    assert!(leaf_end <= ca_end, "{leaf_end} after {ca_end}");
    assert!(rustls_verifies(
        &ca,
        &ca.issue("app.localhost").unwrap().cert[0],
        "app.localhost"
    )
    .is_ok());
}
