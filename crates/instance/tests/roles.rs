//! Invariant 5, customers are not superusers, against a real PostgreSQL 15 under the real
//! supervisor: every attack a customer with the owner role's password could try, and the
//! rights a managed PostgreSQL service owes it.

mod common;

use std::sync::Arc;

use common::{Instance, MANAGEMENT, OWNER, OWNER_PASSWORD, REPLICATION, REPLICATION_PASSWORD};
use tokio_postgres::error::SqlState;
use tusk_backup::{
    BackupOptions, BackupStore, Compression, PgConnection, Progress, StoreConfig, WalMode,
    run_backup,
};
use tusk_instance::supervisor::{RestoreSource, bootstrap};

/// Runs `sql` and expects PostgreSQL to refuse it for lack of privilege; returns its message.
async fn refused(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("the owner role was allowed to run: {sql}"),
        Err(error) => {
            let db = error
                .as_db_error()
                .unwrap_or_else(|| panic!("{sql}: not a server error: {error}"));
            assert_eq!(
                db.code(),
                &SqlState::INSUFFICIENT_PRIVILEGE,
                "{sql}: {}",
                db.message()
            );
            db.message().to_owned()
        }
    }
}

/// The server's answer to a TCP login as the management role, with or without a password.
async fn management_over_tcp(instance: &Instance, password: &str) -> tokio_postgres::Error {
    match instance.connect(MANAGEMENT, password, "postgres").await {
        Ok(_) => panic!("the management role logged in over TCP"),
        Err(error) => error,
    }
}

fn assert_rejected_by_pg_hba(error: &tokio_postgres::Error) {
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {error}"));
    assert_eq!(
        db.code(),
        &SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        "{}",
        db.message()
    );
    assert!(
        db.message().contains("pg_hba.conf rejects connection"),
        "{}",
        db.message()
    );
}

#[tokio::test]
async fn the_owner_role_cannot_run_programs_read_files_or_become_tusk() {
    let mut instance = Instance::start("");
    instance.wait_ready().await;
    let owner = instance.owner().await;
    owner
        .batch_execute("CREATE TABLE t (line text)")
        .await
        .unwrap();

    // The server's environment holds what archive_command needs: never the customer's.
    let message = refused(&owner, "COPY t FROM PROGRAM 'env'").await;
    assert!(message.contains("pg_execute_server_program"), "{message}");
    refused(&owner, "COPY t TO PROGRAM 'cat > /tmp/tusk-owner-was-here'").await;
    refused(&owner, "SELECT pg_read_file('/etc/passwd')").await;
    refused(&owner, "COPY t FROM '/etc/passwd'").await;
    refused(&owner, "SELECT lo_import('/etc/passwd')").await;
    refused(&owner, "ALTER SYSTEM SET work_mem = '1MB'").await;
    refused(&owner, "CREATE EXTENSION adminpack").await;
    refused(&owner, "CREATE EXTENSION file_fdw").await;
    refused(&owner, "GRANT pg_execute_server_program TO CURRENT_USER").await;
    refused(&owner, "GRANT pg_read_server_files TO CURRENT_USER").await;
    refused(&owner, "GRANT pg_write_server_files TO CURRENT_USER").await;
    refused(&owner, &format!("SET ROLE {MANAGEMENT}")).await;
    refused(&owner, "SET SESSION AUTHORIZATION postgres").await;
    refused(&owner, &format!("ALTER ROLE {OWNER} SUPERUSER")).await;
    refused(&owner, &format!("ALTER ROLE {OWNER} REPLICATION")).await;
    refused(
        &owner,
        &format!("ALTER ROLE {MANAGEMENT} PASSWORD 'mine now'"),
    )
    .await;
    refused(
        &owner,
        &format!("ALTER ROLE {REPLICATION} PASSWORD 'mine now'"),
    )
    .await;
    // CREATEROLE on PostgreSQL 15 would let the owner make itself a member of
    // pg_execute_server_program; it must not have it there.
    refused(&owner, "CREATE ROLE helper LOGIN").await;
    let attributes = owner
        .query_one(
            "SELECT rolsuper, rolreplication, rolbypassrls, rolcreaterole, rolcreatedb \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    let attributes: (bool, bool, bool, bool, bool) = (
        attributes.get(0),
        attributes.get(1),
        attributes.get(2),
        attributes.get(3),
        attributes.get(4),
    );
    assert_eq!(attributes, (false, false, false, false, true));
    drop(owner);

    // Over TCP the management role is turned away by pg_hba.conf, whatever the password.
    assert_rejected_by_pg_hba(&management_over_tcp(&instance, "").await);
    assert_rejected_by_pg_hba(&management_over_tcp(&instance, OWNER_PASSWORD).await);
    // The owner cannot open a replication connection (pg_basebackup would copy every file).
    let store_dir = tempfile::tempdir().unwrap();
    let backup_as_owner = backup(&instance, OWNER, OWNER_PASSWORD, store_dir.path()).await;
    assert!(
        backup_as_owner.is_err(),
        "the owner role took a base backup"
    );

    // The management role has no password at all, and is the only superuser.
    let management = instance.management("postgres").await;
    let superusers: Vec<(String, bool)> = management
        .query(
            "SELECT rolname, rolpassword IS NULL FROM pg_authid WHERE rolsuper",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(superusers, [(MANAGEMENT.to_owned(), true)]);
    drop(management);
    instance.stop().await.unwrap();
}

#[tokio::test]
async fn the_owner_role_has_what_a_managed_service_gives() {
    let mut instance = Instance::start("");
    instance.wait_ready().await;
    let owner = instance.owner().await;

    owner
        .batch_execute("CREATE DATABASE scratch")
        .await
        .expect("the owner cannot create a database");
    owner
        .batch_execute("CREATE EXTENSION pgcrypto")
        .await
        .expect("the owner cannot create a trusted extension");
    let digest: String = owner
        .query_one("SELECT encode(digest('tusk', 'sha256'), 'hex')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(digest.len(), 64);
    owner
        .batch_execute(
            "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('shared'); \
             CREATE SCHEMA reporting",
        )
        .await
        .unwrap();

    // Roles of its own, through tusk's functions in the postgres database (PostgreSQL 15).
    let in_postgres = instance
        .connect(OWNER, OWNER_PASSWORD, "postgres")
        .await
        .unwrap();
    in_postgres
        .batch_execute("SELECT tusk.create_role('reader', 'reader password')")
        .await
        .expect("the owner cannot create a role of its own");
    owner
        .batch_execute("GRANT SELECT ON notes TO reader")
        .await
        .expect("the owner cannot grant to its role");
    let reader = instance
        .connect("reader", "reader password", OWNER)
        .await
        .expect("the owner's new role cannot log in");
    let body: String = reader
        .query_one("SELECT body FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "shared");
    drop(reader);
    let reader_in_postgres = instance
        .connect("reader", "reader password", "postgres")
        .await
        .unwrap();
    refused(
        &reader_in_postgres,
        "SELECT tusk.create_role('another', 'x')",
    )
    .await;
    drop(reader_in_postgres);
    // A member of its own roles: it may act as them and change their passwords.
    owner
        .batch_execute("SET ROLE reader; ALTER ROLE reader PASSWORD 'rotated'; RESET ROLE")
        .await
        .expect("the owner cannot rotate its role's password");
    instance
        .connect("reader", "rotated", OWNER)
        .await
        .expect("the rotated password does not work");

    // The functions make only unprivileged roles and drop only the owner's.
    for attack in [
        "SELECT tusk.create_role('pg_mine', 'x')",
        "SELECT tusk.create_role('postgres', 'x')",
        "SELECT tusk.drop_role('postgres')",
        "SELECT tusk.drop_role('tusk_replication')",
        "SELECT tusk.drop_role('app')",
        "SELECT tusk.drop_role('pg_execute_server_program')",
    ] {
        assert!(
            in_postgres.batch_execute(attack).await.is_err(),
            "{attack} succeeded"
        );
    }
    let created: (bool, bool) = {
        let row = in_postgres
            .query_one(
                "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls, \
                 pg_has_role('reader', 'pg_execute_server_program', 'MEMBER') \
                 FROM pg_roles WHERE rolname = 'reader'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(created, (false, false));
    owner
        .batch_execute("REVOKE ALL ON notes FROM reader")
        .await
        .unwrap();
    in_postgres
        .batch_execute("SELECT tusk.drop_role('reader')")
        .await
        .expect("the owner cannot drop its role");
    assert!(
        instance.connect("reader", "rotated", OWNER).await.is_err(),
        "the dropped role still logs in"
    );
    drop((owner, in_postgres));
    instance.stop().await.unwrap();
}

/// Takes a base backup of `instance` as `user`, the way the backup Job does.
async fn backup(
    instance: &Instance,
    user: &str,
    password: &str,
    store_dir: &std::path::Path,
) -> Result<(StoreConfig, String), tusk_backup::BackupError> {
    let store_config = StoreConfig {
        url: format!("file://{}", store_dir.display()),
        ..StoreConfig::default()
    };
    let store = BackupStore::new(&store_config).unwrap();
    let key = tusk_api::names::base_backup_key(
        &tusk_api::names::cluster_storage_prefix(store.prefix(), "ns", "source", "source-uid"),
        "nightly-uid",
    );
    let connection = PgConnection {
        host: instance.config.listen_host.to_string(),
        port: 5432,
        user: user.to_owned(),
        password: Some(password.to_owned()),
        ..Default::default()
    };
    let options = BackupOptions {
        compression: Compression::Gzip { level: 1 },
        passphrase: b"passphrase".to_vec(),
        wal: WalMode::Include,
        label: "roles test".to_owned(),
        pg_basebackup: None,
    };
    run_backup(
        &connection,
        &store,
        &key,
        &options,
        Arc::new(Progress::default()),
    )
    .await?;
    Ok((store_config, key))
}

#[tokio::test]
async fn a_restore_interrupted_after_unpacking_converges_to_this_clusters_roles() {
    // A source cluster from before this rule: the customer had a superuser and made more.
    let mut source = Instance::start("");
    source.wait_ready().await;
    let management = source.management("postgres").await;
    management
        .batch_execute(&format!(
            "CREATE ROLE legacy SUPERUSER LOGIN PASSWORD 'legacy password'; \
             ALTER ROLE {OWNER} SUPERUSER CREATEROLE BYPASSRLS; \
             GRANT pg_execute_server_program TO legacy; \
             GRANT pg_read_server_files TO {OWNER}; \
             GRANT SET, ALTER SYSTEM ON PARAMETER ssl_passphrase_command TO {OWNER}; \
             GRANT ALTER SYSTEM ON PARAMETER work_mem TO PUBLIC; \
             ALTER ROLE {MANAGEMENT} PASSWORD 'the customer knew this one'"
        ))
        .await
        .unwrap();
    drop(management);
    source
        .owner()
        .await
        .batch_execute("CREATE TABLE orders AS SELECT generate_series(1, 100) AS id")
        .await
        .unwrap();
    // Backed up as the replication role, which is all pg_basebackup needs.
    let store_dir = tempfile::tempdir().unwrap();
    let (store, key) = backup(&source, REPLICATION, REPLICATION_PASSWORD, store_dir.path())
        .await
        .expect("the replication role cannot take a base backup");
    source.stop().await.unwrap();

    // The restore unpacks and then the pod dies: the next start finds a data directory and no
    // restore left to do.
    let root = tempfile::tempdir().unwrap();
    let mut config = common::instance_config(root.path(), "");
    let restore = RestoreSource {
        store,
        key,
        passphrase: b"passphrase".to_vec(),
        target_time: None,
        target_lsn: None,
        latest: false,
        expected_size: None,
        expected_sha256: None,
        wal_prefix: None,
        wal_passphrase_env: None,
    };
    bootstrap::restore_backup(&restore, &config.data_dir, config.run_as)
        .await
        .unwrap();
    config.restore = Some(restore);
    config.owner.password = "the new cluster's owner password".to_owned();
    config.replication.password = "the new cluster's replication password".to_owned();
    let new_owner = config.owner.clone();
    let new_replication = config.replication.clone();
    let mut restored = Instance::start_with(root, config);
    restored.wait_ready().await;

    let owner = restored
        .connect(&new_owner.name, &new_owner.password, OWNER)
        .await
        .expect("the new owner password does not open the restored cluster");
    let count: i64 = owner
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 100);
    assert!(
        restored
            .connect(OWNER, OWNER_PASSWORD, OWNER)
            .await
            .is_err(),
        "the source cluster's owner password still works"
    );
    refused(
        &owner,
        "CREATE TABLE t (line text); COPY t FROM PROGRAM 'env'",
    )
    .await;
    refused(&owner, "SELECT pg_read_file('/etc/passwd')").await;
    refused(
        &owner,
        "ALTER SYSTEM SET ssl_passphrase_command = 'env > /tmp/tusk-owner-was-here'",
    )
    .await;
    refused(&owner, "ALTER SYSTEM SET work_mem = '1MB'").await;
    drop(owner);
    let legacy = restored
        .connect("legacy", "legacy password", OWNER)
        .await
        .expect("the legacy role cannot log in any more");
    refused(
        &legacy,
        "CREATE TEMP TABLE t (line text); COPY t FROM PROGRAM 'env'",
    )
    .await;
    drop(legacy);
    assert_rejected_by_pg_hba(&management_over_tcp(&restored, "the customer knew this one").await);

    let management = restored.management("postgres").await;
    let privileged: Vec<String> = management
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' AND (rolsuper \
             OR rolbypassrls OR rolcreaterole OR rolreplication \
             OR pg_has_role(oid, 'pg_execute_server_program', 'MEMBER') \
             OR pg_has_role(oid, 'pg_read_server_files', 'MEMBER')) ORDER BY rolname",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(privileged, [MANAGEMENT, REPLICATION]);
    drop(management);

    // The backup Job's login works with this cluster's replication password.
    let store_dir = tempfile::tempdir().unwrap();
    backup(
        &restored,
        &new_replication.name,
        &new_replication.password,
        store_dir.path(),
    )
    .await
    .expect("the restored cluster cannot be backed up with its replication role");
    restored.stop().await.unwrap();
}
