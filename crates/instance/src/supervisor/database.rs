//! What the supervisor asks of the running server, as tusk's management role over the Unix
//! socket, and the roles it keeps in place.
//!
//! Three roles matter (see docs/security.md, "Customers are not superusers"):
//! - the management role [`MANAGEMENT_ROLE`], a superuser with no password that only peer
//!   authentication over the socket admits; only the supervisor uses it;
//! - the owner role, the customer's login: it owns its database, may create databases, roles
//!   of its own and trusted extensions, and nothing that runs programs or touches server files;
//! - the replication role, which the backup Job's pg_basebackup logs in as.

use std::path::PathBuf;
use std::time::Duration;

use postgres_protocol::escape::{escape_identifier, escape_literal};
use tokio_postgres::{Client, NoTls};

use super::Credentials;

/// tusk's management role: the superuser initdb creates. No password is ever set for it, and
/// pg_hba.conf admits it only over the Unix socket with peer authentication.
pub const MANAGEMENT_ROLE: &str = tusk_api::names::MANAGEMENT_ROLE;

/// The schema, in the `postgres` database, holding the functions through which the owner role
/// manages roles of its own on PostgreSQL 15.
pub const ROLE_FUNCTIONS_SCHEMA: &str = "tusk";

/// The first PostgreSQL version (`server_version_num`) whose CREATEROLE is safe to hand out:
/// from 16 on, a role can grant only roles it holds ADMIN OPTION on, so it cannot grant itself
/// pg_execute_server_program and the like.
pub const SAFE_CREATEROLE_VERSION: i32 = 160_000;

/// Predefined roles whose members run programs or read and write the server's files as the
/// operating-system user PostgreSQL runs as; nobody but the management role may hold them.
pub const SERVER_ACCESS_ROLES: [&str; 3] = [
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
];

/// How long a health or bootstrap connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the supervisor connects: PostgreSQL's Unix socket, as the management role.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The directory holding PostgreSQL's socket.
    pub socket_dir: PathBuf,
    /// PostgreSQL's port (part of the socket's name).
    pub port: u16,
}

impl Connection {
    /// Opens a session to the `postgres` database; the connection task runs in the background
    /// and ends with the client.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        self.connect_to("postgres").await
    }

    /// Opens a session to `database`, like [`Connection::connect`].
    pub async fn connect_to(&self, database: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(MANAGEMENT_ROLE)
            .dbname(database)
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

/// The roles the supervisor keeps in place.
#[derive(Clone, Debug)]
pub struct Roles {
    /// The customer's owner role; its database has the same name.
    pub owner: Credentials,
    /// The backup Job's replication role.
    pub replication: Credentials,
    /// Whether this is a restore test's throwaway, whose owner role runs amcheck for the
    /// check Job (see [`grant_amcheck`]).
    pub restore_check: bool,
}

/// The schema amcheck is installed in where no database had it.
pub const AMCHECK_SCHEMA: &str = "tusk_amcheck";

/// Lets the owner role run `pg_amcheck` on every database that accepts connections: installs
/// amcheck where missing (in its own schema, so no grant reaches the tenant's functions) and
/// grants the owner EXECUTE on amcheck's functions, wherever they are. Only on a restore
/// test's throwaway: amcheck's functions only read, but they are the management role's to
/// hand out, and a customer's own cluster does not need them.
pub async fn grant_amcheck(
    connection: &Connection,
    owner: &str,
) -> Result<(), tokio_postgres::Error> {
    let client = connection.connect().await?;
    let databases: Vec<String> = client
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let owner_literal = escape_literal(owner);
    let owner = escape_identifier(owner);
    let schema = escape_identifier(AMCHECK_SCHEMA);
    for database in databases {
        let client = connection.connect_to(&database).await?;
        let installed = client
            .query_opt(
                "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'amcheck'",
                &[],
            )
            .await?;
        let extension_schema = match installed {
            Some(row) => row.get::<_, String>(0),
            None => {
                client
                    .batch_execute(&format!(
                        "CREATE SCHEMA IF NOT EXISTS {schema}; CREATE EXTENSION amcheck SCHEMA {schema}"
                    ))
                    .await?;
                schema.clone()
            }
        };
        // regnamespace::text is already quoted as an identifier where needed.
        client
            .batch_execute(&format!(
                "GRANT USAGE ON SCHEMA {extension_schema} TO {owner};
                 DO $grant$ DECLARE f regprocedure; BEGIN
                   FOR f IN SELECT d.objid::regprocedure FROM pg_depend d
                       JOIN pg_extension e ON e.oid = d.refobjid
                       WHERE e.extname = 'amcheck' AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
                   LOOP EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, {owner_literal}); END LOOP;
                 END $grant$"
            ))
            .await?;
        tracing::info!(%database, "the owner role may run amcheck");
    }
    Ok(())
}

/// Makes the owner role, its database and the replication role exist with exactly the
/// attributes they should have and this cluster's passwords, and installs the owner's role
/// functions. Runs at every start, so that a restored cluster, an interrupted bootstrap or a
/// rotated password all converge. Passwords travel as SCRAM verifiers computed here, so the
/// plain text never reaches the server (nor its statement log).
pub async fn ensure_roles(client: &Client, roles: &Roles) -> Result<(), tokio_postgres::Error> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    let owner = &roles.owner;
    ensure_role(
        client,
        owner,
        &owner_attributes(version >= SAFE_CREATEROLE_VERSION),
    )
    .await?;
    ensure_role(client, &roles.replication, REPLICATION_ATTRIBUTES).await?;
    let replication = escape_identifier(&roles.replication.name);
    // pg_database_size, which the backup's progress is measured with, needs CONNECT on every
    // database or this role, and the owner may revoke CONNECT on its databases.
    client
        .batch_execute(&format!("GRANT pg_read_all_stats TO {replication}"))
        .await?;

    let database = escape_identifier(&owner.name);
    let database_exists = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&owner.name],
        )
        .await?
        .is_some();
    if !database_exists {
        // CREATE DATABASE cannot run in a transaction block, hence a simple query of its own.
        client
            .batch_execute(&format!("CREATE DATABASE {database} OWNER {database}"))
            .await?;
        tracing::info!(owner = %owner.name, "created the owner's database");
    }
    // A restored database may belong to a role of the source cluster.
    client
        .batch_execute(&format!("ALTER DATABASE {database} OWNER TO {database}"))
        .await?;
    client.batch_execute(&role_functions(&owner.name)).await?;
    Ok(())
}

/// The owner's attributes: it logs in and creates databases; role creation is CREATEROLE only
/// where that is safe (PostgreSQL 16 and later), and [`role_functions`] everywhere.
pub fn owner_attributes(createrole_is_safe: bool) -> String {
    let createrole = if createrole_is_safe {
        "CREATEROLE"
    } else {
        "NOCREATEROLE"
    };
    format!("LOGIN CREATEDB {createrole} NOSUPERUSER NOREPLICATION NOBYPASSRLS INHERIT")
}

/// The replication role's attributes: enough for pg_basebackup, nothing more.
const REPLICATION_ATTRIBUTES: &str =
    "LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT";

async fn ensure_role(
    client: &Client,
    role: &Credentials,
    attributes: &str,
) -> Result<(), tokio_postgres::Error> {
    let name = escape_identifier(&role.name);
    let verifier = escape_literal(&postgres_protocol::password::scram_sha_256(
        role.password.as_bytes(),
    ));
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role.name])
        .await?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    client
        .batch_execute(&format!(
            "{verb} ROLE {name} WITH {attributes} PASSWORD {verifier}"
        ))
        .await
}

/// SQL installing, in the `postgres` database, `tusk.create_role(name, password)` and
/// `tusk.drop_role(name)`: the owner's way to manage roles of its own where CREATEROLE is not
/// safe to give. They run as the management role (SECURITY DEFINER), so they are narrow on
/// purpose:
/// - only the owner may execute them;
/// - `create_role` makes an unprivileged LOGIN role only and grants it to the owner WITH ADMIN
///   OPTION, which is what marks a role as the owner's;
/// - `drop_role` drops only a role the owner holds ADMIN OPTION on that has no privileged
///   attribute;
/// - both pin `search_path` to pg_catalog and then pg_temp, so no object the caller creates
///   can stand in for a built-in.
///
/// The owner cannot create objects in the `postgres` database (it lacks CREATE there), so it
/// cannot tamper with the schema either.
pub fn role_functions(owner: &str) -> String {
    let schema = escape_identifier(ROLE_FUNCTIONS_SCHEMA);
    let owner_name = escape_literal(owner);
    let owner = escape_identifier(owner);
    let mgmt = escape_identifier(MANAGEMENT_ROLE);
    format!(
        r#"
CREATE SCHEMA IF NOT EXISTS {schema};
ALTER SCHEMA {schema} OWNER TO {mgmt};
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
GRANT USAGE ON SCHEMA {schema} TO {owner};

CREATE OR REPLACE FUNCTION {schema}.create_role(role_name text, password text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
BEGIN
    IF role_name IS NULL OR role_name = '' OR role_name LIKE 'pg\_%' THEN
        RAISE EXCEPTION 'role name % is reserved', quote_literal(coalesce(role_name, ''));
    END IF;
    EXECUTE format(
        'CREATE ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD %L',
        role_name, password);
    EXECUTE format('GRANT %I TO %I WITH ADMIN OPTION', role_name, {owner_name});
END
$function$;
ALTER FUNCTION {schema}.create_role(text, text) OWNER TO {mgmt};
REVOKE ALL ON FUNCTION {schema}.create_role(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.create_role(text, text) TO {owner};

CREATE OR REPLACE FUNCTION {schema}.drop_role(role_name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM pg_catalog.pg_auth_members AS m
        JOIN pg_catalog.pg_roles AS r ON r.oid = m.roleid
        JOIN pg_catalog.pg_roles AS o ON o.oid = m.member
        WHERE r.rolname = role_name AND o.rolname = {owner_name} AND m.admin_option
          AND r.rolname <> {owner_name} AND r.rolname NOT LIKE 'pg\_%'
          AND NOT (r.rolsuper OR r.rolreplication OR r.rolbypassrls OR r.rolcreaterole OR r.rolcreatedb)
    ) THEN
        RAISE EXCEPTION 'role % was not created with {ROLE_FUNCTIONS_SCHEMA}.create_role', quote_literal(coalesce(role_name, ''));
    END IF;
    EXECUTE format('DROP ROLE %I', role_name);
END
$function$;
ALTER FUNCTION {schema}.drop_role(text) OWNER TO {mgmt};
REVOKE ALL ON FUNCTION {schema}.drop_role(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.drop_role(text) TO {owner};
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_gets_createrole_only_where_it_is_safe() {
        assert!(owner_attributes(false).contains("NOCREATEROLE"));
        assert!(owner_attributes(true).contains(" CREATEROLE"));
        for safe in [false, true] {
            let attributes = owner_attributes(safe);
            for forbidden in ["NOSUPERUSER", "NOREPLICATION", "NOBYPASSRLS"] {
                assert!(attributes.contains(forbidden), "{attributes}");
            }
        }
    }

    #[test]
    fn role_functions_quote_the_owner() {
        let sql = role_functions("o'wner\"x");
        assert!(sql.contains("TO \"o'wner\"\"x\";"));
        assert!(sql.contains("'o''wner\"x'"));
        assert_eq!(
            sql.matches("SET search_path = pg_catalog, pg_temp").count(),
            2
        );
    }
}
