//! Connecting to SQLite or PostgreSQL, migrations, and the macros that run one query on either.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// A pool on one of the two supported backends.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which backend a [`Db`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Db {
    #[must_use]
    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the migrations of this backend that are not yet applied.
    ///
    /// # Errors
    /// When a migration fails or the database holds a migration this binary does not know.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
            Db::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    /// The migration versions this binary carries for each backend (for the lockstep check).
    #[must_use]
    pub fn migration_versions() -> (Vec<i64>, Vec<i64>) {
        let s = sqlx::migrate!("./migrations/sqlite").iter().map(|m| m.version).collect();
        let p = sqlx::migrate!("./migrations/postgres").iter().map(|m| m.version).collect();
        (s, p)
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// Opens the database named by `url` (`sqlite://path` or `postgres://…`), creating a SQLite
/// file if missing. Does not migrate.
///
/// # Errors
/// When the URL is not understood or the database cannot be reached.
pub async fn connect(url: &str, max_connections: u32) -> Result<Db, StoreError> {
    if url.starts_with("sqlite:") {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        Ok(Db::Sqlite(pool))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        Ok(Db::Postgres(pool))
    } else {
        Err(StoreError::BadUrl)
    }
}

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (duplicate username, protocol ID, …).
    #[error("a record with the same unique value already exists")]
    Conflict,
    /// An audited transaction tried to commit without an audit row.
    #[error("a write transaction tried to commit without writing an audit record")]
    Unaudited,
    #[error("the database URL must start with sqlite: or postgres:")]
    BadUrl,
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
            StoreError::Conflict
        } else {
            StoreError::Database(e)
        }
    }
}

/// Runs the same code on the pool of whichever backend `$db` holds.
macro_rules! on_db {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($p) => $body,
            $crate::db::Db::Postgres($p) => $body,
        }
    };
}

/// Runs the same code on the open transaction of a [`crate::WriteTx`]; `$c` is the connection.
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match &mut $tx.tx {
            $crate::tx::Tx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::tx::Tx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Db;

    #[test]
    fn migration_trees_are_in_lockstep() {
        let (sqlite, postgres) = Db::migration_versions();
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, postgres, "migrations/sqlite and migrations/postgres must carry the same versions");
    }
}
