//! The files and settings tusk owns in a data directory.
//!
//! The ConfigMap's postgresql.conf holds the user-visible settings and is included from the data
//! directory's postgresql.conf, so that a changed ConfigMap takes effect on reload. The settings
//! tusk depends on (where PostgreSQL listens, WAL archiving) are given on the `postgres` command
//! line instead: command-line settings win over every file, so neither a user parameter nor
//! `ALTER SYSTEM` can take them away.

use std::fmt::Write as _;
use std::path::Path;

/// The longest Unix socket path Linux accepts (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What the tusk-owned settings depend on.
#[derive(Clone, Debug)]
pub struct OwnedSettings<'a> {
    /// The address PostgreSQL listens on.
    pub listen_host: &'a str,
    /// The port PostgreSQL listens on.
    pub port: u16,
    /// The directory for PostgreSQL's Unix socket.
    pub socket_dir: &'a Path,
    /// The WAL archive's prefix in the object store, when archiving is on.
    pub wal_archive_prefix: Option<&'a str>,
    /// The `tusk` executable PostgreSQL runs as archive_command.
    pub tusk_executable: &'a Path,
}

impl OwnedSettings<'_> {
    /// The settings as (name, value) pairs, in the order they are passed.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let socket = self.socket_dir.join(format!(".s.PGSQL.{}", self.port));
        // A data directory deep in a sandbox pod's root can exceed the socket path limit; the
        // socket is a convenience (everything tusk does goes over TCP), so go without it then.
        let socket_dirs = if socket.as_os_str().len() <= MAX_SOCKET_PATH {
            self.socket_dir.display().to_string()
        } else {
            String::new()
        };
        let mut pairs = vec![
            ("listen_addresses", self.listen_host.to_owned()),
            ("port", self.port.to_string()),
            ("unix_socket_directories", socket_dirs),
            ("wal_level", "replica".to_owned()),
        ];
        match self.wal_archive_prefix {
            Some(prefix) => {
                pairs.push(("archive_mode", "on".to_owned()));
                pairs.push((
                    "archive_command",
                    format!(
                        "{} wal-push --wal-prefix {} %p",
                        shell_quote(&self.tusk_executable.display().to_string()),
                        shell_quote(prefix)
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

/// The data directory's postgresql.conf: only an include of the mounted file, so that what the
/// operator renders is the whole configuration (besides the command-line settings).
pub fn postgresql_conf(config_file: &Path) -> String {
    let mut text = String::from(
        "# Written by tusk instance at every start. Do not edit: the settings come from the\n\
         # cluster's ConfigMap, included below, and from tusk on the postgres command line.\n",
    );
    let _ = writeln!(
        text,
        "include '{}'",
        conf_quote(&config_file.display().to_string())
    );
    text
}

/// pg_hba.conf: password (SCRAM) authentication for everyone, over TCP and the Unix socket,
/// including replication connections, which the backup Job's pg_basebackup makes as the
/// superuser. `all` in the database column does not cover replication, hence its own lines.
pub fn pg_hba_conf() -> &'static str {
    "# Written by tusk instance at every start. Do not edit.\n\
     # TYPE  DATABASE     USER  ADDRESS     METHOD\n\
     local   all          all               scram-sha-256\n\
     host    all          all   0.0.0.0/0   scram-sha-256\n\
     host    all          all   ::/0        scram-sha-256\n\
     local   replication  all               scram-sha-256\n\
     host    replication  all   0.0.0.0/0   scram-sha-256\n\
     host    replication  all   ::/0        scram-sha-256\n"
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
            socket_dir,
            wal_archive_prefix: archive,
            tusk_executable: Path::new("/usr/local/bin/tusk"),
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
    fn archiving_runs_this_executable_with_the_prefix() {
        let dir = PathBuf::from("/data");
        let pairs = settings(&dir, Some("tusk/ns/db/wal")).pairs();
        assert_eq!(value(&pairs, "archive_mode"), "on");
        assert_eq!(
            value(&pairs, "archive_command"),
            "/usr/local/bin/tusk wal-push --wal-prefix tusk/ns/db/wal %p"
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
    fn an_overlong_socket_path_disables_the_socket() {
        let short = PathBuf::from("/var/lib/postgresql/data/pgdata");
        assert_eq!(
            value(&settings(&short, None).pairs(), "unix_socket_directories"),
            "/var/lib/postgresql/data/pgdata"
        );
        let long = PathBuf::from(format!("/{}", "d".repeat(120)));
        assert_eq!(
            value(&settings(&long, None).pairs(), "unix_socket_directories"),
            ""
        );
    }

    #[test]
    fn awkward_values_are_quoted() {
        assert_eq!(shell_quote("it's here"), r"'it'\''s here'");
        assert_eq!(
            postgresql_conf(Path::new("/etc/o'k/postgresql.conf")),
            "# Written by tusk instance at every start. Do not edit: the settings come from the\n\
             # cluster's ConfigMap, included below, and from tusk on the postgres command line.\n\
             include '/etc/o''k/postgresql.conf'\n"
        );
    }
}
