//! Schema versions: `migrate()` records which of its steps a table has
//! had, in a table beside it (`<table>_schema`), and runs only the steps
//! after them. A later release changes a table by adding a step; a release
//! older than the table refuses it rather than misread it.

use msg_core::{Error, Result};

use crate::row::now_millis;
use crate::table::Table;

/// Brings `table` to the last of `steps` (step `i` makes version `i + 1`),
/// through `conn`, inside the caller's transaction, which must keep a
/// second `migrate()` out until it commits.
pub(crate) async fn upgrade<DB>(
    conn: &mut DB::Connection,
    table: &Table,
    steps: &[Vec<String>],
) -> Result<()>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let versions = table.beside("schema");
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {versions} (
            version BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )"
    ))
    .execute(&mut *conn)
    .await
    .map_err(crate::store::store_error)?;
    let (at,): (i64,) = sqlx::query_as(&format!(
        "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM {versions}"
    ))
    .fetch_one(&mut *conn)
    .await
    .map_err(crate::store::store_error)?;
    let known = i64::try_from(steps.len()).unwrap_or(i64::MAX);
    if at > known {
        return Err(Error::invalid_config(format!(
            "the table {} is at schema version {at}, newer than the {known} this msg-outbox \
             knows: a newer release migrated it; run that release (or a later one) here too",
            table.name()
        )));
    }
    for (version, step) in (1..)
        .zip(steps)
        .skip(usize::try_from(at).unwrap_or(usize::MAX))
    {
        for statement in step {
            sqlx::query(statement)
                .execute(&mut *conn)
                .await
                .map_err(crate::store::store_error)?;
        }
        sqlx::query(&format!(
            "INSERT INTO {versions} (version, applied_at) VALUES ({version}, {})",
            now_millis()
        ))
        .execute(&mut *conn)
        .await
        .map_err(crate::store::store_error)?;
    }
    Ok(())
}
