//! The WAL archiver's state for the operator: `pg_stat_archiver`, the current WAL location and
//! the archive command's last error, served as JSON at [`tusk_api::instance::ARCHIVER_PATH`].
//!
//! The query runs as the management role on the `postgres` database. Every relation and
//! function it names is qualified with `pg_catalog`, so nothing a tenant creates (a
//! `pg_stat_archiver` view in a schema of its own, a search_path) stands in for them.

use std::time::Duration;

use tusk_api::instance::{ArchiverReport, unix_time};

use super::database::Connection;

/// How long the query may take; the operator waits 3 seconds for the whole answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

const QUERY: &str = "SELECT a.archived_count, a.last_archived_wal, \
     (extract(epoch FROM a.last_archived_time) * 1000)::int8, \
     a.failed_count, a.last_failed_wal, \
     (extract(epoch FROM a.last_failed_time) * 1000)::int8, \
     pg_catalog.pg_current_wal_lsn()::text \
     FROM pg_catalog.pg_stat_archiver AS a";

/// Reads the archiver's state from the server, with `last_error` as the archive command's
/// last error line.
pub async fn report(
    connection: &Connection,
    last_error: Option<String>,
) -> Result<ArchiverReport, String> {
    let read = async {
        let client = connection.connect().await?;
        client.query_one(QUERY, &[]).await
    };
    let row = tokio::time::timeout(QUERY_TIMEOUT, read)
        .await
        .map_err(|_| "the server did not answer in time".to_owned())?
        .map_err(|error| error.to_string())?;
    let time = |index: usize| -> Result<_, String> {
        Ok(row
            .try_get::<_, Option<i64>>(index)
            .map_err(|error| error.to_string())?
            .and_then(unix_time))
    };
    let text = |index: usize| -> Result<Option<String>, String> {
        row.try_get(index).map_err(|error| error.to_string())
    };
    Ok(ArchiverReport {
        archived_count: row.try_get(0).map_err(|error| error.to_string())?,
        last_archived_wal: text(1)?,
        last_archived_time: time(2)?,
        failed_count: row.try_get(3).map_err(|error| error.to_string())?,
        last_failed_wal: text(4)?,
        last_failed_time: time(5)?,
        current_lsn: text(6)?.unwrap_or_default(),
        last_error,
    })
}
