//! The only parts of a customer's kubeconfig that the operator uses, and the refusal of the rest.
//!
//! A kubeconfig is a program as much as a file: `exec` and `auth-provider` run commands,
//! `tokenFile`, `client-certificate`, `client-key` and `certificate-authority` read files,
//! `proxy-url` sends traffic elsewhere, and impersonation borrows other identities. The operator
//! holds cluster-wide power and the platform's store credentials, so a kubeconfig that a tenant
//! writes into a Secret may use none of that. [`parse`] walks the document itself and accepts only
//! inline data: the server (https), `certificate-authority-data`, `tls-server-name`, and a `token`
//! or `client-certificate-data` with `client-key-data`. [`RemoteAccess::config`] then builds the
//! [`kube::Config`] from those values alone, so no code path can read a file or spawn a process.
//! A server on a link-local or cloud-metadata address is refused as well, both as written and
//! after name resolution (the client then connects to the address that was checked).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use base64::Engine;
use kube::config::AuthInfo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::SecretString;
use serde_yaml_ng::{Mapping, Value};

/// A kubeconfig, or the address its server resolves to, that the operator will not use. The
/// message names the offending field as a path into the document, such as
/// `users[0].user.exec`, and never contains a value from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Refusal {
    /// Where in the kubeconfig, such as `users[0].user.tokenFile`.
    pub field: String,
    /// Why it is refused, as a sentence fragment a person can act on.
    pub problem: String,
}

impl Refusal {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// How the operator proves who it is to the customer's cluster.
#[derive(Clone)]
pub enum RemoteCredential {
    /// A bearer token.
    Token(SecretString),
    /// A client certificate and its key, both PEM, base64-encoded as in the kubeconfig.
    ClientCertificate {
        /// `client-certificate-data`.
        certificate_data: String,
        /// `client-key-data`.
        key_data: SecretString,
    },
}

/// What the operator takes from a customer's kubeconfig.
#[derive(Clone)]
pub struct RemoteAccess {
    /// The API server's URL, https only.
    pub server: http::Uri,
    /// The CA certificates (DER) that sign the server's certificate; the system roots if empty.
    pub certificate_authority: Vec<Vec<u8>>,
    /// The name the server's certificate must carry, when it differs from the URL's host.
    pub tls_server_name: Option<String>,
    /// The credential.
    pub credential: RemoteCredential,
    /// The namespace of the current context, where the tunnel lives ("default" when none).
    pub namespace: String,
}

impl std::fmt::Debug for RemoteAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAccess")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Top-level fields a kubeconfig may have. `preferences` and `extensions` are accepted and
/// ignored: nothing in them is acted on.
const TOP_LEVEL_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "clusters",
    "contexts",
    "users",
    "current-context",
    "preferences",
    "extensions",
];

/// What each refused field would have made the operator do, for the message.
fn refused_field_problem(field: &str) -> Option<&'static str> {
    Some(match field {
        "exec" => {
            "the operator never runs a credential plugin; use token or client-certificate-data and client-key-data"
        }
        "auth-provider" => {
            "the operator never runs an auth provider; use token or client-certificate-data and client-key-data"
        }
        "tokenFile" => {
            "the operator never reads a file named in a kubeconfig; put the token itself in token"
        }
        "client-certificate" | "client-key" => {
            "the operator never reads a file named in a kubeconfig; use client-certificate-data and client-key-data"
        }
        "certificate-authority" => {
            "the operator never reads a file named in a kubeconfig; use certificate-authority-data"
        }
        "proxy-url" => "the operator connects to the cluster directly, never through a proxy",
        "username" | "password" => {
            "basic authentication is not supported; use token or client-certificate-data and client-key-data"
        }
        "as" | "as-uid" | "as-groups" | "as-user-extra" => {
            "impersonation is not supported; give the credentials of the identity itself"
        }
        _ => return None,
    })
}

/// Parses a kubeconfig and keeps only what the operator may use, refusing everything else.
pub fn parse(text: &str) -> Result<RemoteAccess, Refusal> {
    let document: Value = serde_yaml_ng::from_str(text)
        .map_err(|_| Refusal::new("kubeconfig", "is not valid YAML"))?;
    let root = as_mapping(&document, "kubeconfig")?;
    for key in root.keys() {
        let name = key_name(key, "kubeconfig")?;
        if !TOP_LEVEL_FIELDS.contains(&name) {
            return Err(Refusal::new(
                shown(name),
                "is not a field the operator accepts in a kubeconfig",
            ));
        }
    }
    let clusters = named_list(root, "clusters", "cluster", check_cluster)?;
    let users = named_list(root, "users", "user", check_user)?;
    let contexts = named_list(root, "contexts", "context", check_context)?;

    let (context_path, context) = match root.get("current-context") {
        Some(Value::String(current)) if !current.is_empty() => contexts
            .iter()
            .find(|(_, name, _)| name == current)
            .map(|(path, _, context)| (path.clone(), context))
            .ok_or_else(|| Refusal::new("current-context", "names no context in contexts"))?,
        _ if contexts.len() == 1 => (contexts[0].0.clone(), &contexts[0].2),
        _ => {
            return Err(Refusal::new(
                "current-context",
                "is needed to choose one of several contexts",
            ));
        }
    };
    let (_, _, cluster) = clusters
        .iter()
        .find(|(_, name, _)| *name == context.cluster)
        .ok_or_else(|| {
            Refusal::new(
                format!("{context_path}.context.cluster"),
                "names no cluster in clusters",
            )
        })?;
    let (_, _, credential) = users
        .iter()
        .find(|(_, name, _)| *name == context.user)
        .ok_or_else(|| {
            Refusal::new(
                format!("{context_path}.context.user"),
                "names no user in users",
            )
        })?;
    Ok(RemoteAccess {
        server: cluster.server.clone(),
        certificate_authority: cluster.certificate_authority.clone(),
        tls_server_name: cluster.tls_server_name.clone(),
        credential: credential.clone(),
        namespace: context
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
    })
}

struct Cluster {
    server: http::Uri,
    certificate_authority: Vec<Vec<u8>>,
    tls_server_name: Option<String>,
}

struct Context {
    cluster: String,
    user: String,
    namespace: Option<String>,
}

/// Checks a list of `{name, <inner>: {...}}` entries, returning (path, name, checked inner).
fn named_list<T>(
    root: &Mapping,
    list: &str,
    inner: &str,
    check: impl Fn(&Mapping, &str) -> Result<T, Refusal>,
) -> Result<Vec<(String, String, T)>, Refusal> {
    let entries = match root.get(list) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Sequence(entries)) => entries,
        Some(_) => return Err(Refusal::new(list, "is not a list")),
    };
    let mut checked = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let path = format!("{list}[{index}]");
        let entry = as_mapping(entry, &path)?;
        for key in entry.keys() {
            let name = key_name(key, &path)?;
            if name != "name" && name != inner {
                return Err(Refusal::new(
                    format!("{path}.{}", shown(name)),
                    "is not a field the operator accepts in a kubeconfig",
                ));
            }
        }
        let name = optional_string(entry, "name", &path)?.unwrap_or_default();
        let inner_path = format!("{path}.{inner}");
        let body = match entry.get(inner) {
            Some(value) => as_mapping(value, &inner_path)?,
            None => return Err(Refusal::new(inner_path, "is missing")),
        };
        checked.push((path, name, check(body, &inner_path)?));
    }
    Ok(checked)
}

/// Refuses any key of `body` outside `accepted`, naming the refused field and why.
fn only_fields(body: &Mapping, path: &str, accepted: &[&str]) -> Result<(), Refusal> {
    for key in body.keys() {
        let name = key_name(key, path)?;
        if accepted.contains(&name) {
            continue;
        }
        let problem = refused_field_problem(name)
            .unwrap_or("is not a field the operator accepts in a kubeconfig");
        return Err(Refusal::new(format!("{path}.{}", shown(name)), problem));
    }
    Ok(())
}

fn check_cluster(body: &Mapping, path: &str) -> Result<Cluster, Refusal> {
    only_fields(
        body,
        path,
        &[
            "server",
            "certificate-authority-data",
            "tls-server-name",
            "insecure-skip-tls-verify",
            "disable-compression",
            "extensions",
        ],
    )?;
    if let Some(skip) = body.get("insecure-skip-tls-verify")
        && skip != &Value::Bool(false)
    {
        return Err(Refusal::new(
            format!("{path}.insecure-skip-tls-verify"),
            "the operator always verifies the server's certificate; give certificate-authority-data instead",
        ));
    }
    let server_path = format!("{path}.server");
    let server = optional_string(body, "server", path)?
        .ok_or_else(|| Refusal::new(&server_path, "is missing"))?;
    let server = check_server(&server, &server_path)?;
    let authority_path = format!("{path}.certificate-authority-data");
    let certificate_authority = match optional_string(body, "certificate-authority-data", path)? {
        None => Vec::new(),
        Some(data) => {
            let pem = decode_base64(&data, &authority_path)?;
            let certificates: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
                .map(|certificate| certificate.map(|der| der.as_ref().to_vec()))
                .collect::<Result<_, _>>()
                .map_err(|_| Refusal::new(&authority_path, "is not PEM certificates"))?;
            if certificates.is_empty() {
                return Err(Refusal::new(authority_path, "holds no PEM certificate"));
            }
            certificates
        }
    };
    let tls_server_name = optional_string(body, "tls-server-name", path)?;
    if let Some(name) = &tls_server_name
        && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
    {
        return Err(Refusal::new(
            format!("{path}.tls-server-name"),
            "is not a DNS name or an IP address",
        ));
    }
    Ok(Cluster {
        server,
        certificate_authority,
        tls_server_name,
    })
}

fn check_user(body: &Mapping, path: &str) -> Result<RemoteCredential, Refusal> {
    only_fields(
        body,
        path,
        &[
            "token",
            "client-certificate-data",
            "client-key-data",
            "extensions",
        ],
    )?;
    let token = optional_string(body, "token", path)?.filter(|token| !token.is_empty());
    let certificate = optional_string(body, "client-certificate-data", path)?;
    let key = optional_string(body, "client-key-data", path)?;
    match (token, certificate, key) {
        (Some(token), None, None) => Ok(RemoteCredential::Token(SecretString::from(token))),
        (None, Some(certificate_data), Some(key_data)) => {
            decode_base64(
                &certificate_data,
                &format!("{path}.client-certificate-data"),
            )?;
            decode_base64(&key_data, &format!("{path}.client-key-data"))?;
            Ok(RemoteCredential::ClientCertificate {
                certificate_data,
                key_data: SecretString::from(key_data),
            })
        }
        (None, Some(_), None) => Err(Refusal::new(
            format!("{path}.client-key-data"),
            "is missing beside client-certificate-data",
        )),
        (None, None, Some(_)) => Err(Refusal::new(
            format!("{path}.client-certificate-data"),
            "is missing beside client-key-data",
        )),
        (None, None, None) => Err(Refusal::new(
            path,
            "has no credential; give token, or client-certificate-data and client-key-data",
        )),
        (Some(_), _, _) => Err(Refusal::new(
            format!("{path}.token"),
            "and a client certificate are both given; give one of them",
        )),
    }
}

fn check_context(body: &Mapping, path: &str) -> Result<Context, Refusal> {
    only_fields(body, path, &["cluster", "user", "namespace", "extensions"])?;
    Ok(Context {
        cluster: optional_string(body, "cluster", path)?.unwrap_or_default(),
        user: optional_string(body, "user", path)?.unwrap_or_default(),
        namespace: optional_string(body, "namespace", path)?
            .filter(|n| !n.is_empty())
            .map(|namespace| check_namespace(namespace, path))
            .transpose()?,
    })
}

/// The tunnel's namespace must be a namespace's name, an RFC 1123 label: the database's server
/// certificate names the tunnel Service in it, and a namespace with dots in it (such as
/// `other.db.example.com`) would make that name another database's host.
fn check_namespace(namespace: String, path: &str) -> Result<String, Refusal> {
    if tusk_api::names::is_dns_label(&namespace) {
        Ok(namespace)
    } else {
        Err(Refusal::new(
            format!("{path}.namespace"),
            "is not a namespace's name (a lowercase RFC 1123 label)",
        ))
    }
}

/// The server must be an https URL with a host and no credentials, query or fragment in it.
fn check_server(text: &str, path: &str) -> Result<http::Uri, Refusal> {
    let uri: http::Uri = text
        .parse()
        .map_err(|_| Refusal::new(path, "is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(Refusal::new(path, "must be an https:// URL"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| Refusal::new(path, "has no host"))?;
    if authority.as_str().contains('@') {
        return Err(Refusal::new(path, "may not contain credentials"));
    }
    if uri.query().is_some() {
        return Err(Refusal::new(path, "may not have a query"));
    }
    if let Some(ip) = literal_ip(authority.host())
        && is_metadata_or_link_local(ip)
    {
        return Err(Refusal::new(
            path,
            "is a link-local or cloud metadata address, which the operator never contacts",
        ));
    }
    Ok(uri)
}

/// The IP address a URL host spells, if it spells one (IPv6 in brackets).
fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Link-local addresses (169.254.0.0/16, fe80::/10, where clouds serve instance metadata and
/// credentials) and AWS's IPv6 metadata address fd00:ec2::254, also when written as an
/// IPv4-mapped or IPv4-compatible IPv6 address.
pub fn is_metadata_or_link_local(ip: IpAddr) -> bool {
    const AWS_IPV6_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4() {
                return v4.is_link_local();
            }
            v6 == AWS_IPV6_METADATA || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

impl RemoteAccess {
    /// The host and port of the server, for name resolution.
    fn host_and_port(&self) -> (String, u16) {
        let host = self
            .server
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        (host, self.server.port_u16().unwrap_or(443))
    }

    /// Resolves the server's host and checks every address it resolves to, so that a name
    /// pointing at a metadata address is refused like the address itself. Returns the address
    /// to connect to; [`RemoteAccess::config`] pins the connection to it, so a second lookup
    /// cannot answer differently.
    pub async fn resolve(&self) -> Result<SocketAddr, ResolveError> {
        let (host, port) = self.host_and_port();
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| ResolveError::Lookup)?
            .collect();
        if addresses
            .iter()
            .any(|address| is_metadata_or_link_local(address.ip()))
        {
            return Err(ResolveError::Refused(Refusal::new(
                "server",
                "resolves to a link-local or cloud metadata address, which the operator never contacts",
            )));
        }
        addresses.first().copied().ok_or(ResolveError::Lookup)
    }

    /// A client configuration made of the accepted fields only, connecting to `address` (from
    /// [`RemoteAccess::resolve`]) while verifying the certificate against the server's name.
    pub fn config(&self, address: SocketAddr) -> kube::Config {
        let (host, _) = self.host_and_port();
        let mut url = format!("https://{address}");
        if let Some(path) = self.server.path_and_query() {
            url.push_str(path.path().trim_end_matches('/'));
        }
        // The address came from a SocketAddr, so it always forms a valid URI.
        let cluster_url = url.parse().unwrap_or_else(|_| self.server.clone());
        let mut config = kube::Config::new(cluster_url);
        config.default_namespace = self.namespace.clone();
        config.root_cert =
            (!self.certificate_authority.is_empty()).then(|| self.certificate_authority.clone());
        config.tls_server_name = Some(self.tls_server_name.clone().unwrap_or(host));
        config.accept_invalid_certs = false;
        config.proxy_url = None;
        config.auth_info = match &self.credential {
            RemoteCredential::Token(token) => AuthInfo {
                token: Some(token.clone()),
                ..AuthInfo::default()
            },
            RemoteCredential::ClientCertificate {
                certificate_data,
                key_data,
            } => AuthInfo {
                client_certificate_data: Some(certificate_data.clone()),
                client_key_data: Some(key_data.clone()),
                ..AuthInfo::default()
            },
        };
        config
    }
}

/// Resolving the server's name failed or gave a refused address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name does not resolve (now); worth retrying.
    #[error("the server's host name does not resolve")]
    Lookup,
    /// The name resolves to an address the operator never contacts.
    #[error(transparent)]
    Refused(Refusal),
}

fn as_mapping<'a>(value: &'a Value, path: &str) -> Result<&'a Mapping, Refusal> {
    value
        .as_mapping()
        .ok_or_else(|| Refusal::new(path, "is not a mapping"))
}

fn key_name<'a>(key: &'a Value, path: &str) -> Result<&'a str, Refusal> {
    key.as_str()
        .ok_or_else(|| Refusal::new(path, "has a key that is not a string"))
}

fn optional_string(body: &Mapping, field: &str, path: &str) -> Result<Option<String>, Refusal> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(Refusal::new(format!("{path}.{field}"), "is not a string")),
    }
}

fn decode_base64(data: &str, path: &str) -> Result<Vec<u8>, Refusal> {
    let compact: String = data.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| Refusal::new(path, "is not base64"))
}

/// A field name as it may appear in a message: a tenant chose it, so it is cut short and
/// stripped of anything but printable ASCII.
fn shown(name: &str) -> String {
    const LONGEST: usize = 64;
    let mut shown: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(LONGEST)
        .collect();
    if name.chars().count() > LONGEST {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "remote-token-123";

    fn kubeconfig(cluster_extra: &str, user: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: customer
  cluster:
    server: https://customer.example.com:6443
{cluster_extra}users:
- name: admin
  user:
{user}contexts:
- name: customer
  context:
    cluster: customer
    user: admin
    namespace: apps
current-context: customer
"
        )
    }

    fn token_user() -> String {
        format!("    token: {TOKEN}\n")
    }

    fn refusal(text: &str) -> Refusal {
        parse(text).expect_err("the kubeconfig is refused")
    }

    #[test]
    fn a_token_kubeconfig_is_accepted_and_builds_a_config_with_nothing_else() {
        let access = parse(&kubeconfig("", &token_user())).unwrap();
        assert_eq!(access.namespace, "apps");
        let config = access.config("192.0.2.10:6443".parse().unwrap());
        assert_eq!(config.cluster_url.to_string(), "https://192.0.2.10:6443/");
        assert_eq!(
            config.tls_server_name.as_deref(),
            Some("customer.example.com")
        );
        assert!(config.proxy_url.is_none());
        assert!(!config.accept_invalid_certs);
        let auth = &config.auth_info;
        assert!(auth.token.is_some());
        assert!(auth.exec.is_none() && auth.auth_provider.is_none() && auth.token_file.is_none());
        assert!(auth.client_certificate.is_none() && auth.client_key.is_none());
        assert!(!format!("{access:?}").contains(TOKEN));
    }

    #[test]
    fn every_field_that_runs_reads_or_redirects_is_refused_by_path() {
        let cases = [
            (
                kubeconfig("", "    exec:\n      command: touch\n"),
                "users[0].user.exec",
            ),
            (
                kubeconfig("", "    auth-provider:\n      name: gcp\n"),
                "users[0].user.auth-provider",
            ),
            (
                kubeconfig("", "    tokenFile: /var/run/secrets/token\n"),
                "users[0].user.tokenFile",
            ),
            (
                kubeconfig(
                    "",
                    "    client-certificate: /etc/cert\n    client-key: /etc/key\n",
                ),
                "users[0].user.client-certificate",
            ),
            (
                kubeconfig("", "    client-key: /etc/key\n"),
                "users[0].user.client-key",
            ),
            (
                kubeconfig("", "    username: admin\n    password: pw\n"),
                "users[0].user.username",
            ),
            (
                kubeconfig("", &format!("{}    as: system:admin\n", token_user())),
                "users[0].user.as",
            ),
            (
                kubeconfig(
                    "",
                    &format!("{}    as-groups: [system:masters]\n", token_user()),
                ),
                "users[0].user.as-groups",
            ),
            (
                kubeconfig("    certificate-authority: /etc/ca.crt\n", &token_user()),
                "clusters[0].cluster.certificate-authority",
            ),
            (
                kubeconfig("    proxy-url: http://proxy:3128\n", &token_user()),
                "clusters[0].cluster.proxy-url",
            ),
            (
                kubeconfig("    insecure-skip-tls-verify: true\n", &token_user()),
                "clusters[0].cluster.insecure-skip-tls-verify",
            ),
        ];
        for (text, field) in cases {
            assert_eq!(refusal(&text).field, field, "{text}");
        }
    }

    #[test]
    fn servers_must_be_https_and_never_metadata_or_link_local() {
        for server in [
            "http://customer.example.com",
            "https://169.254.169.254",
            "https://169.254.170.2:443",
            "https://[fe80::1]:6443",
            "https://[fd00:ec2::254]",
            "https://[::ffff:169.254.169.254]",
            "https://user:pw@customer.example.com",
            "file:///etc/passwd",
        ] {
            let text =
                kubeconfig("", &token_user()).replace("https://customer.example.com:6443", server);
            assert_eq!(
                refusal(&text).field,
                "clusters[0].cluster.server",
                "{server}"
            );
        }
        for ip in ["10.0.0.1", "192.0.2.1", "fd00::1", "::1"] {
            assert!(!is_metadata_or_link_local(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn unknown_fields_and_missing_pieces_are_named() {
        let text = kubeconfig("", &token_user()).replace("kind: Config", "kind: Config\nextra: 1");
        assert_eq!(refusal(&text).field, "extra");
        let text = kubeconfig("", "    client-certificate-data: YQ==\n");
        assert_eq!(refusal(&text).field, "users[0].user.client-key-data");
        let text = kubeconfig("", "    {}\n");
        assert!(parse(&text).is_err());
        let text = kubeconfig("", &token_user())
            .replace("current-context: customer", "current-context: other");
        assert_eq!(refusal(&text).field, "current-context");
        let text = kubeconfig(
            "    certificate-authority-data: bm90IHBlbQ==\n",
            &token_user(),
        );
        assert_eq!(
            refusal(&text).field,
            "clusters[0].cluster.certificate-authority-data"
        );
        assert_eq!(refusal("[1, 2]").field, "kubeconfig");
    }

    #[test]
    fn a_namespace_with_dots_cannot_put_another_host_in_the_certificate() {
        for hostile in ["other.db.tusk.local", "Apps", "apps.svc", "-apps"] {
            let text = kubeconfig("", &token_user())
                .replace("namespace: apps", &format!("namespace: \"{hostile}\""));
            assert_eq!(
                refusal(&text).field,
                "contexts[0].context.namespace",
                "{hostile}"
            );
        }
    }

    #[test]
    fn a_refusal_never_repeats_a_value_from_the_kubeconfig() {
        let text = kubeconfig("", "    tokenFile: /secret/path-xyz\n");
        let message = refusal(&text).to_string();
        assert!(!message.contains("path-xyz"), "{message}");
        let long_key = "k".repeat(500);
        let text = kubeconfig("", &token_user())
            .replace("kind: Config", &format!("kind: Config\n{long_key}: 1"));
        assert!(refusal(&text).to_string().len() < 200);
    }
}
