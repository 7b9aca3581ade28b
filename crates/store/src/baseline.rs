//! Raw baselines for benchmarks (`casebook bench`): the same rows Casebook writes, written the
//! plainest way the database allows — multi-row `INSERT`s into a plain table without indexes, in
//! one transaction, no audit, no checks — so a benchmark can report Casebook's speed as a ratio
//! to what the database itself does on the same machine in the same run. Also the scratch
//! PostgreSQL database a benchmark runs in, created and dropped by it.
//!
//! Nothing in Casebook's own paths uses this module. It keeps the benchmark's SQL here because
//! only `store` knows SQL. The multi-row `INSERT` and the `CREATE/DROP DATABASE` statements are
//! built at run time, the documented exception to static SQL: what is generated is placeholders
//! (`($1, …, $7), ($8, …)`) and a database name checked to be `[a-z0-9_]`, never a value.

use std::sync::Arc;

use crate::db::{Db, StoreError};
use crate::tx::Tx;

/// Rows a statement inserts at most: 7,000 parameters, under SQLite's 32,766 and PostgreSQL's
/// 65,535.
pub const RAW_BATCH: usize = 1000;

/// One item value as a plain row: participant, event, form, item group, row, item, value.
#[derive(Debug, Clone, Copy)]
pub struct RawValue<'a> {
    pub participant: &'a str,
    pub event: &'a str,
    pub form: &'a str,
    pub group: &'a str,
    pub row: i32,
    pub item: &'a str,
    pub value: &'a str,
}

/// An open transaction inserting [`RawValue`]s into `bench_raw_values`.
pub struct RawValuesTx {
    tx: Tx,
    /// Rows of a full batch, and its statement (prepared once, reused).
    batch: usize,
    full: Arc<str>,
}

impl std::fmt::Debug for RawValuesTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawValuesTx").finish_non_exhaustive()
    }
}

/// `INSERT INTO bench_raw_values … VALUES ($1, …, $7), …` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO bench_raw_values (participant, event, form, item_group, row_number, item, value) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        let b = r * 7;
        sql.push_str(&format!("(${}, ${}, ${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7));
    }
    sql
}

impl Db {
    /// (Re)creates the plain table `bench_raw_values` (seven columns, no key, no index).
    ///
    /// # Errors
    /// When the database refuses.
    pub async fn create_raw_values_table(&self) -> Result<(), StoreError> {
        on_db!(self, p => {
            sqlx::query("DROP TABLE IF EXISTS bench_raw_values").execute(p).await?;
            sqlx::query(
                "CREATE TABLE bench_raw_values (participant TEXT NOT NULL, event TEXT NOT NULL, \
                 form TEXT NOT NULL, item_group TEXT NOT NULL, row_number INTEGER NOT NULL, \
                 item TEXT NOT NULL, value TEXT)",
            )
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Drops `bench_raw_values`.
    ///
    /// # Errors
    /// When the database refuses.
    pub async fn drop_raw_values_table(&self) -> Result<(), StoreError> {
        on_db!(self, p => {
            sqlx::query("DROP TABLE IF EXISTS bench_raw_values").execute(p).await?;
        });
        Ok(())
    }

    /// Rows in `bench_raw_values` (to check a baseline wrote what it says).
    ///
    /// # Errors
    /// When the database refuses.
    pub async fn count_raw_values(&self) -> Result<i64, StoreError> {
        Ok(on_db!(self, p => sqlx::query_scalar("SELECT COUNT(*) FROM bench_raw_values").fetch_one(p).await?))
    }

    /// Starts the one transaction of a raw insert baseline.
    ///
    /// # Errors
    /// When the database cannot start a transaction.
    pub async fn begin_raw_values(&self, batch: usize) -> Result<RawValuesTx, StoreError> {
        let batch = batch.clamp(1, RAW_BATCH);
        let tx = match self {
            Db::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
        };
        Ok(RawValuesTx { tx, batch, full: insert_sql(batch).into() })
    }
}

impl RawValuesTx {
    /// Inserts up to [`RAW_BATCH`] rows with one statement (best in batches of the size given to
    /// [`Db::begin_raw_values`]: their statement is prepared once).
    ///
    /// # Errors
    /// When the database refuses; more than [`RAW_BATCH`] rows.
    pub async fn insert(&mut self, rows: &[RawValue<'_>]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        if rows.len() > RAW_BATCH {
            return Err(StoreError::Corrupt(format!("{} rows in one raw insert (at most {RAW_BATCH})", rows.len())));
        }
        let sql: Arc<str> = if rows.len() == self.batch { self.full.clone() } else { insert_sql(rows.len()).into() };
        macro_rules! run {
            ($c:expr) => {{
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for r in rows {
                    q = q
                        .bind(r.participant)
                        .bind(r.event)
                        .bind(r.form)
                        .bind(r.group)
                        .bind(r.row)
                        .bind(r.item)
                        .bind(r.value);
                }
                q.execute($c).await?;
            }};
        }
        match &mut self.tx {
            Tx::Sqlite(t) => run!(&mut **t),
            Tx::Postgres(t) => run!(&mut **t),
        }
        Ok(())
    }

    /// Commits the baseline's transaction.
    ///
    /// # Errors
    /// When the commit fails.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self.tx {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// A name safe to splice into `CREATE DATABASE` (lower-case ASCII letters, digits, `_`).
fn scratch_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Creates the PostgreSQL database `name` through the server at `admin_url` (a database URL
/// whose user may create databases) and returns the URL of the new database.
///
/// # Errors
/// A name other than `[a-z0-9_]`; the server unreachable or refusing.
pub async fn create_scratch_postgres(admin_url: &str, name: &str) -> Result<String, StoreError> {
    if !scratch_name_ok(name) {
        return Err(StoreError::Corrupt(format!("'{name}' is not a scratch database name ([a-z0-9_])")));
    }
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut c).await?;
    <sqlx::PgConnection as sqlx::Connection>::close(c).await?;
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let server = match base.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((host, _)) => format!("{scheme}://{host}"),
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    Ok(match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    })
}

/// Drops the PostgreSQL database `name` (closing its connections first).
///
/// # Errors
/// A name other than `[a-z0-9_]`; the server unreachable or refusing.
pub async fn drop_scratch_postgres(admin_url: &str, name: &str) -> Result<(), StoreError> {
    if !scratch_name_ok(name) {
        return Err(StoreError::Corrupt(format!("'{name}' is not a scratch database name ([a-z0-9_])")));
    }
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&mut c)
        .await?;
    <sqlx::PgConnection as sqlx::Connection>::close(c).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_numbers_seven_placeholders_a_row() {
        assert_eq!(
            insert_sql(2),
            "INSERT INTO bench_raw_values (participant, event, form, item_group, row_number, item, value) VALUES \
             ($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14)"
        );
    }

    #[test]
    fn scratch_names_are_plain() {
        assert!(scratch_name_ok("casebook_bench_123"));
        assert!(!scratch_name_ok("x\"; DROP DATABASE postgres; --"));
        assert!(!scratch_name_ok(""));
    }
}
