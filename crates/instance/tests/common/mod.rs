//! Helpers shared by the integration tests: a real PostgreSQL under the real supervisor, on an
//! address of its own, and a minimal HTTP client for the health endpoints.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tusk_instance::supervisor::{self, Credentials, InstanceConfig, InstanceError, RunAs};

/// The customer's owner role every test instance gets, and its database.
pub const OWNER: &str = "app";
/// Its password.
pub const OWNER_PASSWORD: &str = "owner secret 'quoted' password";
/// The backup Job's replication role.
pub const REPLICATION: &str = "tusk_replication";
/// Its password.
pub const REPLICATION_PASSWORD: &str = "replication-password-123";
/// tusk's management role.
pub const MANAGEMENT: &str = tusk_instance::supervisor::database::MANAGEMENT_ROLE;

/// A loopback address no other test (in this process or another) is likely to use, so that
/// every instance can listen on PostgreSQL's fixed port 5432, as it does in a pod.
pub fn unique_loopback() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst).wrapping_mul(97));
    let [_, b, c, d] = seed.to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(127, b.max(2), c, d.clamp(2, 254)))
}

/// A port free on `host` right now.
pub fn free_port(host: IpAddr) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("no free port on the loopback address")
}

/// A supervised PostgreSQL running in this process.
pub struct Instance {
    /// Holds the data directory and the configuration file.
    pub root: tempfile::TempDir,
    /// The supervisor's configuration.
    pub config: InstanceConfig,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), InstanceError>>>,
}

/// A configuration for a fresh instance under `root`, with `postgresql_conf` as the mounted file.
pub fn instance_config(root: &Path, postgresql_conf: &str) -> InstanceConfig {
    // PostgreSQL runs as the postgres user, which must be able to reach the data directory.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config_file = root.join("postgresql.conf");
    std::fs::write(&config_file, postgresql_conf).unwrap();
    let host = unique_loopback();
    InstanceConfig {
        config_file,
        data_dir: root.join("pgdata"),
        health_port: free_port(host),
        listen_host: host,
        postgres_port: 5432,
        postgres_bin_dir: supervisor::find_postgres_bin_dir(Some("15")),
        owner: Credentials {
            name: OWNER.to_owned(),
            password: OWNER_PASSWORD.to_owned(),
        },
        replication: Credentials {
            name: REPLICATION.to_owned(),
            password: REPLICATION_PASSWORD.to_owned(),
        },
        wal_archive_prefix: None,
        restore: None,
        run_as: Some(RunAs::lookup("postgres").expect("the tests need a local postgres user")),
        tusk_executable: PathBuf::from("tusk"),
        reload_interval: Duration::from_millis(200),
        tls_dir: None,
        socket_dir: None,
    }
}

impl Instance {
    /// Starts the supervisor on a fresh directory.
    pub fn start(postgresql_conf: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let config = instance_config(root.path(), postgresql_conf);
        Self::start_with(root, config)
    }

    /// Starts the supervisor with a given configuration.
    pub fn start_with(root: tempfile::TempDir, config: InstanceConfig) -> Self {
        let mut instance = Self {
            root,
            config,
            shutdown: None,
            task: None,
        };
        instance.restart();
        instance
    }

    /// Starts the supervisor (again) on the same directory and configuration.
    pub fn restart(&mut self) {
        assert!(self.task.is_none(), "the supervisor is still running");
        let (shutdown, stopped) = oneshot::channel::<()>();
        self.task = Some(tokio::spawn(supervisor::run(
            self.config.clone(),
            async move {
                let _ = stopped.await;
            },
        )));
        self.shutdown = Some(shutdown);
    }

    /// Where the health endpoints are.
    pub fn health(&self) -> SocketAddr {
        SocketAddr::new(self.config.listen_host, self.config.health_port)
    }

    /// Waits until /readyz answers 200; panics after a minute.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http_status(self.health(), "/readyz").await == Some(200) {
                return;
            }
            if self.task.as_ref().is_some_and(JoinHandle::is_finished) {
                panic!("the supervisor ended before it was ready");
            }
            assert!(Instant::now() < deadline, "the instance never became ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Connects as `user` to `database` over TCP.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        connect(
            &self.config.listen_host.to_string(),
            5432,
            user,
            password,
            database,
        )
        .await
    }

    /// Connects as the owner role to its database over TCP.
    pub async fn owner(&self) -> tokio_postgres::Client {
        self.connect(OWNER, OWNER_PASSWORD, OWNER)
            .await
            .expect("the owner cannot log in to its database")
    }

    /// Connects as the management role to `database` through the Unix socket, as the
    /// supervisor does (this test process is the supervisor's user).
    pub async fn management(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&self.config.data_dir)
            .port(5432)
            .user(MANAGEMENT)
            .dbname(database)
            .connect_timeout(Duration::from_secs(5))
            .connect(tokio_postgres::NoTls)
            .await
            .expect("the management role cannot log in through the socket");
        tokio::spawn(connection);
        client
    }

    /// Asks the supervisor to stop (what SIGTERM does) and returns its result.
    pub async fn stop(&mut self) -> Result<(), InstanceError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.finished().await
    }

    /// Waits for the supervisor to return, at most a minute.
    pub async fn finished(&mut self) -> Result<(), InstanceError> {
        let task = self
            .task
            .take()
            .expect("the supervisor was already awaited");
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the supervisor did not return within a minute")
            .expect("the supervisor task panicked")
    }

    /// The postmaster's pid, from postmaster.pid.
    pub fn postmaster_pid(&self) -> Option<i32> {
        postmaster_pid(&self.config.data_dir)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // A failed test must not leave a server behind: the supervisor's child is killed when
        // the task is dropped with the runtime, and an explicit kill covers the rest.
        if let Some(pid) = self.postmaster_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
    }
}

/// The postmaster's pid recorded in a data directory.
pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whether a process with this pid exists.
pub fn process_exists(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Connects with tokio-postgres, without TLS.
pub async fn connect(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname(database)
        .connect_timeout(Duration::from_secs(5))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The status code of `GET path`, or None when nothing answers.
pub async fn http_status(address: SocketAddr, path: &str) -> Option<u16> {
    http_get(address, path).await.map(|(status, _)| status)
}

/// `GET path` on `address`: the status code and the body.
pub async fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address))
        .await
        .ok()?
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Some((status, body))
}
