//! What the TLS tests do as a client would, with the real psql and openssl: read a Secret's
//! values, connect with a libpq connection string, and look at the certificate a server
//! presents in PostgreSQL's own TLS handshake.
//!
//! Include it with `#[path = "shared/tls.rs"] mod tls_client;` next to the tenant_isolation
//! support module, whose `Kubectl` it takes.

use std::path::Path;
use std::process::Command;

use super::support::Kubectl;

/// One value of a Secret, decoded, read as `kubectl` (the administrator, or a customer's
/// cluster).
pub fn secret_value(kubectl: &Kubectl, namespace: &str, secret: &str, key: &str) -> String {
    let template = format!("go-template={{{{index .data \"{key}\" | base64decode}}}}");
    kubectl.ok(&[
        "--namespace",
        namespace,
        "get",
        "secret",
        secret,
        "-o",
        &template,
    ])
}

/// The cluster IP of the Service `service` in `namespace`.
pub fn service_ip(kubectl: &Kubectl, namespace: &str, service: &str) -> String {
    kubectl.ok(&[
        "--namespace",
        namespace,
        "get",
        "service",
        service,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

/// Runs `sql` with psql given a whole connection string and the password; returns what it
/// printed, or what it said on failure.
pub fn psql(connection: &str, password: &str, sql: &str) -> Result<String, String> {
    let output = Command::new("psql")
        .arg(connection)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        // Nothing from the environment may add to what the connection string asks for: no
        // other TLS mode or CA, no client certificate or key.
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .env_remove("PGSSLCERT")
        .env_remove("PGSSLKEY")
        .output()
        .expect("psql runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Writes `text` to the file `name` in `dir`; returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path.display().to_string()
}

/// The certificate PostgreSQL presents at `address` (`host:port`), as the real openssl
/// client reads it in a TLS handshake (PostgreSQL's own STARTTLS), shown by `openssl x509`
/// with `options` (such as `-serial`, or `-ext subjectAltName`).
fn served_certificate(address: &str, options: &str) -> Result<String, String> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -starttls postgres -connect {address} </dev/null 2>/dev/null \
             | openssl x509 -noout {options}"
        ))
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() && !text.is_empty() {
        Ok(text)
    } else {
        Err(format!(
            "no certificate: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The serial number of the certificate PostgreSQL serves at `host`, port 5432.
pub fn served_serial(host: &str) -> Result<String, String> {
    let text = served_certificate(&format!("{host}:5432"), "-serial")?;
    text.strip_prefix("serial=")
        .map(str::to_owned)
        .ok_or_else(|| format!("no serial: {text}"))
}

/// The DNS names and addresses in the certificate PostgreSQL serves at `host`, port 5432.
pub fn served_names(host: &str) -> Result<Vec<String>, String> {
    let text = served_certificate(&format!("{host}:5432"), "-ext subjectAltName")?;
    Ok(text
        .lines()
        .skip_while(|line| !line.contains("Subject Alternative Name"))
        .skip(1)
        .flat_map(|line| line.split(','))
        .filter_map(|entry| {
            let entry = entry.trim();
            entry
                .strip_prefix("DNS:")
                .or_else(|| entry.strip_prefix("IP Address:"))
                .map(str::to_owned)
        })
        .collect())
}

/// The instance pod's identity and its containers' starts: unchanged unless the pod or a
/// container restarted.
pub fn pod_incarnation(admin: &Kubectl, namespace: &str, pod: &str) -> String {
    admin.ok(&[
        "--namespace",
        namespace,
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.metadata.uid}{range .status.containerStatuses[*]} {.name}:{.restartCount}:{.state.running.startedAt}{end}",
    ])
}

/// A CA of nobody's: a client that trusts it alone must fail to verify any tusk database.
pub fn stranger_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().expect("a CA key");
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "a stranger's CA");
    params.self_signed(&key).expect("the CA certificate").pem()
}
