//! SQL as a cluster's owner, for the tests on `tusk dev` that include it with `#[path]` beside
//! `tenant_isolation/support.rs`.

use std::process::Command;

use crate::support::Kubectl;

/// Runs SQL as the owner of `cluster` in `namespace` through its Service, as a customer's psql
/// would, with the login from the cluster's credentials Secret, read by `admin`.
pub fn owner_sql(
    admin: &Kubectl,
    namespace: &str,
    cluster: &str,
    sql: &str,
) -> Result<String, String> {
    let get = |args: &[&str]| {
        let mut all = vec!["--namespace", namespace, "get"];
        all.extend(args);
        admin.run(&all)
    };
    let secret = format!("{cluster}-credentials");
    let field = |key: &str| {
        get(&[
            "secret",
            &secret,
            "-o",
            &format!("go-template={{{{.data.{key} | base64decode}}}}"),
        ])
    };
    let host = get(&[
        "service",
        &format!("{cluster}-rw"),
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let output = Command::new("psql")
        .args([
            "-h",
            &host,
            "-U",
            &field("username")?,
            "-d",
            &field("dbname")?,
        ])
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", field("password")?)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("psql runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "psql `{sql}`: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// SQL that creates the table `filler` of `rows` rows of `parts` random MD5s each (33 bytes a
/// part on disk, compressing to about half): data big enough to make a backup or a restore
/// take a while.
#[allow(dead_code)] // Not every test that includes this file needs it.
pub fn filler_sql(rows: u32, parts: u32) -> String {
    format!(
        "CREATE TABLE filler AS SELECT g AS id, \
         (SELECT string_agg(md5(random()::text || s), '') \
          FROM generate_series(1, {parts} + 0 * g) AS s) AS body \
         FROM generate_series(1, {rows}) AS g"
    )
}
