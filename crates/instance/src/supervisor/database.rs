//! What the supervisor asks of the running server, over TCP as the superuser.

use std::time::Duration;

use postgres_protocol::escape::{escape_identifier, escape_literal};
use tokio_postgres::{Client, NoTls};

use super::Credentials;

/// How long a health or bootstrap connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where and as whom the supervisor connects.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The host PostgreSQL listens on (a concrete address, never 0.0.0.0).
    pub host: String,
    /// PostgreSQL's port.
    pub port: u16,
    /// The superuser.
    pub superuser: Credentials,
}

impl Connection {
    /// Opens a session to the `postgres` database; the connection task runs in the background
    /// and ends with the client.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host(&self.host)
            .port(self.port)
            .user(&self.superuser.name)
            .password(&self.superuser.password)
            .dbname("postgres")
            .application_name("tusk-instance")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect(NoTls)
            .await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "supervisor connection ended");
            }
        });
        Ok(client)
    }

    /// Whether the server accepts connections and is a primary (not in recovery).
    pub async fn is_primary(&self) -> Result<bool, tokio_postgres::Error> {
        let client = self.connect().await?;
        let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await?;
        let in_recovery: bool = row.try_get(0)?;
        Ok(!in_recovery)
    }
}

/// Creates the application user and its database when missing, and sets the user's password
/// to `app.password`. The password travels as a SCRAM verifier computed here, so the plain text
/// never reaches the server (nor its statement log).
pub async fn ensure_app_user(
    client: &Client,
    app: &Credentials,
) -> Result<(), tokio_postgres::Error> {
    let role = escape_identifier(&app.name);
    let verifier = escape_literal(&postgres_protocol::password::scram_sha_256(
        app.password.as_bytes(),
    ));
    let role_exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&app.name])
        .await?
        .is_some();
    let statement = if role_exists {
        format!("ALTER ROLE {role} WITH LOGIN PASSWORD {verifier}")
    } else {
        format!("CREATE ROLE {role} WITH LOGIN PASSWORD {verifier}")
    };
    client.batch_execute(&statement).await?;
    let database_exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&app.name])
        .await?
        .is_some();
    if !database_exists {
        // CREATE DATABASE cannot run in a transaction block, hence a simple query of its own.
        client
            .batch_execute(&format!("CREATE DATABASE {role} OWNER {role}"))
            .await?;
        tracing::info!(user = %app.name, "created the application user's database");
    }
    Ok(())
}
