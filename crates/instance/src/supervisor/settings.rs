//! The files and settings tusk owns in a data directory.
//!
//! The ConfigMap's postgresql.conf holds the user-visible settings and is included from the data
//! directory's postgresql.conf, so that a changed ConfigMap takes effect on reload. The settings
//! tusk depends on (where PostgreSQL listens, which authentication files it reads, WAL
//! archiving) are given on the `postgres` command line instead: command-line settings win over
//! every file, so neither a user parameter nor a key added to the ConfigMap can take them away.

use std::fmt::Write as _;
use std::path::Path;

use super::database::MANAGEMENT_ROLE;

/// The data directory's postgresql.conf.
pub const POSTGRESQL_CONF: &str = "postgresql.conf";
/// The data directory's pg_hba.conf.
pub const PG_HBA_CONF: &str = "pg_hba.conf";
/// The data directory's pg_ident.conf.
pub const PG_IDENT_CONF: &str = "pg_ident.conf";
/// The pg_ident.conf map that lets the supervisor's operating-system user log in as the
/// management role.
pub const IDENT_MAP: &str = "tusk";

/// The server certificate's file in the TLS directory (a `kubernetes.io/tls` Secret's key).
pub const TLS_CERT_FILE: &str = "tls.crt";
/// The server key's file in the TLS directory.
pub const TLS_KEY_FILE: &str = "tls.key";
/// The file in the TLS directory holding the CA certificates tusk's client certificates are
/// verified with (the cluster's own CA, never one a tenant brought).
pub const TLS_CLIENT_CA_FILE: &str = "client-ca.crt";

/// The longest Unix socket path Linux accepts (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What the tusk-owned settings depend on.
#[derive(Clone, Debug)]
pub struct OwnedSettings<'a> {
    /// The address PostgreSQL listens on.
    pub listen_host: &'a str,
    /// The port PostgreSQL listens on.
    pub port: u16,
    /// The data directory, which holds the authentication files tusk writes.
    pub data_dir: &'a Path,
    /// The directory for PostgreSQL's Unix socket; the supervisor's only way in (see
    /// [`socket_path_fits`]).
    pub socket_dir: &'a Path,
    /// The WAL archive's prefix in the object store, when archiving is on.
    pub wal_archive_prefix: Option<&'a str>,
    /// The `tusk` executable PostgreSQL runs as archive_command, a client of the supervisor's
    /// WAL archiver on [`tusk_backup::wal_archiver::SOCKET_NAME`] in `socket_dir`.
    pub tusk_executable: &'a Path,
    /// The directory holding the server certificate and key, when PostgreSQL serves TLS.
    pub tls_dir: Option<&'a Path>,
    /// Whether the TLS directory holds [`TLS_CLIENT_CA_FILE`], so that PostgreSQL can verify
    /// client certificates.
    pub client_ca: bool,
}

impl OwnedSettings<'_> {
    /// The settings as (name, value) pairs, in the order they are passed.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("listen_addresses", self.listen_host.to_owned()),
            ("port", self.port.to_string()),
            (
                "unix_socket_directories",
                self.socket_dir.display().to_string(),
            ),
            // Only the PostgreSQL user (and root) may even reach the socket.
            ("unix_socket_permissions", "0700".to_owned()),
            // A customer who adds a file to the ConfigMap must not be able to point PostgreSQL
            // at it as its authentication rules.
            (
                "hba_file",
                self.data_dir.join(PG_HBA_CONF).display().to_string(),
            ),
            (
                "ident_file",
                self.data_dir.join(PG_IDENT_CONF).display().to_string(),
            ),
            ("wal_level", "replica".to_owned()),
        ];
        if let Some(dir) = self.tls_dir {
            pairs.extend([
                ("ssl", "on".to_owned()),
                (
                    "ssl_cert_file",
                    dir.join(TLS_CERT_FILE).display().to_string(),
                ),
                ("ssl_key_file", dir.join(TLS_KEY_FILE).display().to_string()),
                // The CA of tusk's client certificates: PostgreSQL asks clients for a
                // certificate, and only the `cert` lines of pg_hba.conf (tusk's own roles)
                // require one. Without it, no certificate can be verified.
                (
                    "ssl_ca_file",
                    if self.client_ca {
                        dir.join(TLS_CLIENT_CA_FILE).display().to_string()
                    } else {
                        String::new()
                    },
                ),
                ("ssl_min_protocol_version", "TLSv1.2".to_owned()),
                // Only a program may hand PostgreSQL a key's passphrase; tusk's key has none.
                ("ssl_passphrase_command", String::new()),
            ]);
        }
        match self.wal_archive_prefix {
            Some(_) => {
                pairs.push(("archive_mode", "on".to_owned()));
                // The archiver in `tusk instance` holds the archive (at the prefix), the
                // store's credentials and the passphrase; the command only hands it the segment.
                pairs.push((
                    "archive_command",
                    format!(
                        "{} wal-push --archiver-socket {} %p",
                        shell_quote(&self.tusk_executable.display().to_string()),
                        shell_quote(
                            &self
                                .socket_dir
                                .join(tusk_backup::wal_archiver::SOCKET_NAME)
                                .display()
                                .to_string()
                        )
                    ),
                ));
            }
            None => pairs.push(("archive_mode", "off".to_owned())),
        }
        pairs
    }

    /// The settings as `postgres` arguments: `-c name=value` each.
    pub fn command_line(&self) -> Vec<String> {
        self.pairs()
            .into_iter()
            .flat_map(|(name, value)| ["-c".to_owned(), format!("{name}={value}")])
            .collect()
    }
}

/// The checked copy of the ConfigMap's settings, in the data directory.
pub const CHECKED_SETTINGS: &str = "tusk-settings.conf";

/// The data directory's postgresql.conf: only an include of [`CHECKED_SETTINGS`], so that what
/// the operator renders, once checked, is the whole configuration (besides the command-line
/// settings).
pub fn postgresql_conf() -> String {
    let mut text = String::from(
        "# Written by tusk instance at every start. Do not edit: the settings come from the\n\
         # cluster's ConfigMap, checked and copied below, and from tusk on the postgres\n\
         # command line.\n",
    );
    let _ = writeln!(text, "include '{CHECKED_SETTINGS}'");
    text
}

/// The ConfigMap's settings as PostgreSQL may read them. The ConfigMap lives in the tenant's
/// namespace, where the tenant may edit it directly, bypassing admission: so every line must be
/// exactly what the operator writes (`name = 'value'`) for a setting customers may change, with
/// a value the allow-list accepts (`tusk_api::cluster::parameter_refusal`). Anything else
/// (`include`, a file path, a setting off the list, another syntax) is dropped. Returns the
/// checked text and a description of each dropped line that names the setting, never its value.
pub fn checked_settings(mounted: &str) -> (String, Vec<String>) {
    let mut checked = String::from("# Checked by tusk instance from the cluster's ConfigMap.\n");
    let mut dropped = Vec::new();
    for (number, line) in mounted.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match parse_setting(trimmed) {
            Some((name, value)) => match tusk_api::cluster::parameter_refusal(name, &value) {
                None => {
                    let _ = writeln!(checked, "{name} = '{}'", conf_quote(&value));
                }
                Some(why) => dropped.push(format!("line {}: {name} {why}", number + 1)),
            },
            None => dropped.push(format!(
                "line {}: not a setting in the form name = 'value'",
                number + 1
            )),
        }
    }
    (checked, dropped)
}

/// `name = 'value'` as the operator writes it, with `''` for a quote inside the value.
fn parse_setting(line: &str) -> Option<(&str, String)> {
    let (name, rest) = line.split_once(" = '")?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    {
        return None;
    }
    let body = rest.strip_suffix('\'')?;
    let mut value = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            // Inside the value a quote only appears doubled.
            if chars.next() != Some('\'') {
                return None;
            }
        } else if c == '\\' && chars.next() != Some('\\') {
            // The operator writes a backslash doubled; nothing else is meant.
            return None;
        }
        value.push(c);
    }
    Some((name, value))
}

/// Whether a socket for `port` in `dir` fits Linux's socket path limit.
pub fn socket_path_fits(dir: &Path, port: u16) -> bool {
    dir.join(format!(".s.PGSQL.{port}")).as_os_str().len() <= MAX_SOCKET_PATH
}

/// pg_hba.conf. The first matching line decides:
/// - the management role comes in over the Unix socket only, by peer authentication through
///   [`IDENT_MAP`], and is rejected over TCP whatever password is offered;
/// - with `tls`, every TCP connection without TLS is rejected, whoever it claims to be (with
///   PostgreSQL's "pg_hba.conf rejects connection ... no encryption");
/// - with `tls`, `replication_role` (tusk's own, for the backup Job's pg_basebackup and for
///   replicas) logs in only with a client certificate for its name (`cert`, which verifies
///   the certificate against the cluster's CA and its CommonName against the role), never with
///   a password; without `client_ca` (no CA to verify with), it is rejected;
/// - every other role logs in with a password (SCRAM), over TCP (with `tls`, only over TLS);
/// - replication connections (which `all` in the database column does not cover) only for
///   `replication_role`.
pub fn pg_hba_conf(replication_role: &str, tls: bool, client_ca: bool) -> String {
    let mgmt = hba_quote(MANAGEMENT_ROLE);
    let replication = hba_quote(replication_role);
    let (plaintext, tcp, replication_method) = if tls {
        (
            format!(
                "hostnossl  all          all     0.0.0.0/0  reject\n\
                 hostnossl  replication  all     0.0.0.0/0  reject\n\
                 hostnossl  all          all     ::/0       reject\n\
                 hostnossl  replication  all     ::/0       reject\n\
                 hostssl    all          {replication}  all  {method}\n",
                method = if client_ca { "cert" } else { "reject" }
            ),
            "hostssl",
            if client_ca { "cert" } else { "reject" },
        )
    } else {
        (String::new(), "host", "scram-sha-256")
    };
    format!(
        "# Written by tusk instance at every start. Do not edit.\n\
         # TYPE  DATABASE     USER  ADDRESS  METHOD\n\
         local   all          {mgmt}         peer map={IDENT_MAP}\n\
         local   replication  {mgmt}         peer map={IDENT_MAP}\n\
         host    all          {mgmt}  all    reject\n\
         host    replication  {mgmt}  all    reject\n\
         {plaintext}\
         {tcp}  all          all     all    scram-sha-256\n\
         {tcp}  replication  {replication}  all  {replication_method}\n"
    )
}

/// pg_ident.conf: the operating-system user the supervisor runs as is the management role.
pub fn pg_ident_conf(supervisor_user: &str) -> String {
    format!(
        "# Written by tusk instance at every start. Do not edit.\n\
         # MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n\
         {IDENT_MAP}  {}  {}\n",
        hba_quote(supervisor_user),
        hba_quote(MANAGEMENT_ROLE)
    )
}

/// Quotes a name for pg_hba.conf and pg_ident.conf: double quotes make it a name, not a keyword
/// (`all`, `+group`, `@file`, a `/regex`).
fn hba_quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a word for `/bin/sh`, which runs archive_command.
fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:".contains(c));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Escapes a value for a single-quoted postgresql.conf string.
fn conf_quote(value: &str) -> String {
    value.replace('\\', r"\\").replace('\'', "''")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn settings<'a>(socket_dir: &'a Path, archive: Option<&'a str>) -> OwnedSettings<'a> {
        OwnedSettings {
            listen_host: "127.0.4.2",
            port: 5432,
            data_dir: Path::new("/data"),
            socket_dir,
            wal_archive_prefix: archive,
            tusk_executable: Path::new("/usr/local/bin/tusk"),
            tls_dir: None,
            client_ca: false,
        }
    }

    fn value(pairs: &[(&'static str, String)], name: &str) -> String {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    }

    #[test]
    fn archiving_hands_segments_to_the_archiver_through_this_executable() {
        let dir = PathBuf::from("/data");
        let pairs = settings(&dir, Some("tusk/ns/db/wal")).pairs();
        assert_eq!(value(&pairs, "archive_mode"), "on");
        assert_eq!(
            value(&pairs, "archive_command"),
            "/usr/local/bin/tusk wal-push --archiver-socket /data/.s.tusk-wal %p"
        );
        assert_eq!(value(&pairs, "listen_addresses"), "127.0.4.2");
        assert_eq!(value(&pairs, "port"), "5432");
        assert_eq!(value(&pairs, "wal_level"), "replica");
    }

    #[test]
    fn without_archiving_archive_mode_is_off() {
        let dir = PathBuf::from("/data");
        let pairs = settings(&dir, None).pairs();
        assert_eq!(value(&pairs, "archive_mode"), "off");
        assert!(pairs.iter().all(|(name, _)| *name != "archive_command"));
    }

    #[test]
    fn the_socket_and_the_authentication_files_are_tusks() {
        let pairs = settings(Path::new("/run/pg"), None).pairs();
        assert_eq!(value(&pairs, "unix_socket_directories"), "/run/pg");
        assert_eq!(value(&pairs, "unix_socket_permissions"), "0700");
        assert_eq!(value(&pairs, "hba_file"), "/data/pg_hba.conf");
        assert_eq!(value(&pairs, "ident_file"), "/data/pg_ident.conf");
        assert!(socket_path_fits(
            Path::new("/var/lib/postgresql/data/pgdata"),
            5432
        ));
        assert!(!socket_path_fits(
            &PathBuf::from(format!("/{}", "d".repeat(100))),
            5432
        ));
    }

    #[test]
    fn the_management_role_is_rejected_over_tcp_before_any_password_rule() {
        let hba = pg_hba_conf("tusk_replication", false, false);
        let rules: Vec<Vec<&str>> = hba
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.split_whitespace().collect())
            .collect();
        let first_host_rule = rules.iter().position(|r| r[0] == "host").unwrap();
        assert_eq!(
            rules[first_host_rule],
            ["host", "all", "\"postgres\"", "all", "reject"]
        );
        assert!(
            rules
                .iter()
                .any(|r| r[..3] == ["host", "replication", "\"tusk_replication\""])
        );
        assert!(
            rules
                .iter()
                .filter(|r| r[0] == "local")
                .all(|r| r[2] == "\"postgres\"" && r[3] == "peer")
        );
        assert_eq!(
            pg_ident_conf("post\"gres"),
            "# Written by tusk instance at every start. Do not edit.\n\
             # MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n\
             tusk  \"post\"\"gres\"  \"postgres\"\n"
        );
    }

    #[test]
    fn with_tls_every_tcp_login_needs_tls_and_postgresql_serves_it() {
        let hba = pg_hba_conf("tusk_replication", true, true);
        let rules: Vec<Vec<&str>> = hba
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.split_whitespace().collect())
            .collect();
        // Nothing admits a TCP login without TLS; plaintext is rejected before any password
        // rule, for databases and replication, over IPv4 and IPv6.
        assert!(
            rules
                .iter()
                .filter(|r| r[0] == "host")
                .all(|r| r.last() == Some(&"reject")),
            "{hba}"
        );
        let first_password_rule = rules.iter().position(|r| r[0] == "hostssl").unwrap();
        for database in ["all", "replication"] {
            for address in ["0.0.0.0/0", "::/0"] {
                let reject = rules
                    .iter()
                    .position(|r| r[..] == ["hostnossl", database, "all", address, "reject"])
                    .unwrap_or_else(|| panic!("no reject of {database} from {address}: {hba}"));
                assert!(reject < first_password_rule);
            }
        }
        // tusk's replication role only with a client certificate, before the password rule
        // that would otherwise admit it to a database.
        for database in ["all", "replication"] {
            assert!(
                rules
                    .iter()
                    .any(|r| r[..] == ["hostssl", database, "\"tusk_replication\"", "all", "cert"]),
                "no cert rule for {database}: {hba}"
            );
        }
        let catch_all = rules
            .iter()
            .position(|r| r[..] == ["hostssl", "all", "all", "all", "scram-sha-256"])
            .unwrap();
        let certificate = rules
            .iter()
            .position(|r| r[..] == ["hostssl", "all", "\"tusk_replication\"", "all", "cert"])
            .unwrap();
        assert!(certificate < catch_all, "{hba}");
        assert!(
            !rules
                .iter()
                .any(|r| r[2] == "\"tusk_replication\"" && r.last() != Some(&"cert")),
            "{hba}"
        );
        // Without a CA to verify certificates with, the role is not admitted at all.
        let no_ca = pg_hba_conf("tusk_replication", true, false);
        assert!(
            no_ca
                .lines()
                .filter(|line| line.contains("\"tusk_replication\""))
                .all(|line| line.ends_with("reject")),
            "{no_ca}"
        );

        let dir = PathBuf::from("/data");
        let mut settings = settings(&dir, None);
        settings.tls_dir = Some(Path::new("/etc/tusk-tls"));
        let pairs = settings.pairs();
        assert_eq!(value(&pairs, "ssl"), "on");
        assert_eq!(value(&pairs, "ssl_cert_file"), "/etc/tusk-tls/tls.crt");
        assert_eq!(value(&pairs, "ssl_key_file"), "/etc/tusk-tls/tls.key");
        assert_eq!(value(&pairs, "ssl_min_protocol_version"), "TLSv1.2");
        assert_eq!(value(&pairs, "ssl_ca_file"), "");
        settings.client_ca = true;
        assert_eq!(
            value(&settings.pairs(), "ssl_ca_file"),
            "/etc/tusk-tls/client-ca.crt"
        );
    }

    #[test]
    fn awkward_values_are_quoted() {
        assert_eq!(shell_quote("it's here"), r"'it'\''s here'");
        assert!(postgresql_conf().contains("include 'tusk-settings.conf'\n"));
    }

    #[test]
    fn only_allowed_settings_in_the_operators_form_reach_postgresql() {
        // What the operator writes passes, quotes and backslashes included.
        let (checked, dropped) = checked_settings(
            "# tusk\nshared_buffers = '512MB'\nwork_mem = '64MB'\n\
             log_line_prefix = 'it''s \\\\here'\n",
        );
        assert!(dropped.is_empty(), "{dropped:?}");
        assert!(checked.contains("shared_buffers = '512MB'\n"), "{checked}");
        assert!(
            checked.contains("log_line_prefix = 'it''s \\\\here'\n"),
            "{checked}"
        );

        // What a tenant could write into the ConfigMap by hand does not.
        for attack in [
            "include_dir = 'conf.d'",
            "include '/etc/passwd'",
            "ssl_passphrase_command = 'sh -c id'",
            "shared_preload_libraries = '/tmp/evil.so'",
            "log_directory = '/var/lib'",
            "fsync = 'off'",
            "work_mem = 64MB",
            "work_mem='64MB'",
            "Work_Mem = '64MB'",
            "work_mem = '64MB' # and 'more'",
            "work_mem = '64MB' include 'x'",
        ] {
            let (checked, dropped) = checked_settings(attack);
            assert_eq!(dropped.len(), 1, "{attack} was kept: {checked}");
            assert!(
                !checked.contains("off") && !checked.contains('/'),
                "{checked}"
            );
            assert!(!dropped[0].contains("sh -c") && !dropped[0].contains("/tmp"));
        }
    }
}
