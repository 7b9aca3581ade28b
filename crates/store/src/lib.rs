//! Storage: the only crate that knows SQL.
//!
//! One codebase runs on embedded SQLite (default) and PostgreSQL. Each query is written once
//! with `$1` placeholders and run on whichever backend the [`Db`] holds ([`on_db!`] /
//! [`on_tx!`] compile the same code for both); where the dialects differ there are two arms.
//!
//! Writes go through [`WriteTx`]: a transaction that knows who is acting and through which
//! channel, and that refuses to commit unless it wrote at least one audit row.

#[macro_use]
mod db;
pub mod accounts;
pub mod audit;
pub mod baseline;
pub mod capture;
pub mod datasets;
pub mod designs;
pub mod export;
pub mod extracts;
pub mod files;
pub mod jobs;
pub mod matrix;
pub mod notes;
pub mod review;
pub mod rules;
pub mod studies;
mod tx;

pub use db::{Backend, Db, StoreError, connect};
pub use tx::{Actor, WriteTx};

use casebook_domain::clock::Clock;
use std::sync::Arc;

/// The database plus the clock that stamps every write.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    clock: Arc<dyn Clock>,
}

impl Store {
    #[must_use]
    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Starts an audited write transaction (`BEGIN IMMEDIATE` on SQLite, so writers queue
    /// instead of failing on upgrade).
    ///
    /// # Errors
    /// When the database cannot start a transaction.
    pub async fn write(&self, actor: Actor) -> Result<WriteTx, StoreError> {
        WriteTx::begin(&self.db, actor, self.clock.now()).await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        on_db!(&self.db, p => sqlx::query("SELECT 1").execute(p).await.is_ok())
    }
}
