//! Use cases: one function per user action.
//!
//! Each use case checks who is asking ([`Principal`]) against the permission matrix in
//! `domain`, validates input into domain types, and writes through one audited transaction
//! in `store`. The web layer and the CLI call these functions and nothing below them.

pub mod access;
pub mod accounts;
pub mod audit;
pub mod auth;
pub mod capture;
pub mod dde;
pub mod demo;
pub mod design;
pub mod entry;
mod error;
pub mod export;
pub mod extract;
pub mod files;
pub mod import;
pub mod jobs;
pub mod mail;
pub mod matrix;
pub mod modules;
pub mod notes;
pub mod review;
pub mod rules;
pub mod rules_engine;
pub mod secrets;
pub mod studies;

pub use access::Access;
pub use auth::Principal;
pub use error::AppError;
pub use error::anyhow_like;

use casebook_domain::design::StudyDesign;
use casebook_domain::password::PasswordPolicy;
use casebook_store::Store;
use std::sync::Arc;
use time::Duration;

/// Settings the use cases need (validated at start by the binary).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// A session unused for this many minutes ends.
    pub session_idle_minutes: i64,
    /// Lock accounts after repeated failed sign-ins (OpenClinica `user.lock.switch`).
    pub lockout_enabled: bool,
    /// Consecutive failures that lock an account
    /// (OpenClinica `user.lock.allowedFailedConsecutiveLoginAttempts`).
    pub lockout_after: i64,
    pub password: PasswordPolicy,
    /// argon2id memory cost in KiB (OWASP minimum 19456).
    pub argon2_memory_kib: u32,
    /// argon2id iterations.
    pub argon2_iterations: u32,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            session_idle_minutes: 30,
            lockout_enabled: true,
            lockout_after: 5,
            password: PasswordPolicy::default(),
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
        }
    }
}

impl SecuritySettings {
    /// # Errors
    /// A message naming the setting that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=24 * 60).contains(&self.session_idle_minutes) {
            return Err(format!(
                "security.session_idle_minutes must be between 1 and 1440 (got {})",
                self.session_idle_minutes
            ));
        }
        if !(1..=100).contains(&self.lockout_after) {
            return Err(format!("security.lockout_after must be between 1 and 100 (got {})", self.lockout_after));
        }
        if !(1024..=1_048_576).contains(&self.argon2_memory_kib) {
            return Err(format!(
                "security.argon2_memory_kib must be between 1024 and 1048576 (got {})",
                self.argon2_memory_kib
            ));
        }
        if !(1..=20).contains(&self.argon2_iterations) {
            return Err(format!(
                "security.argon2_iterations must be between 1 and 20 (got {})",
                self.argon2_iterations
            ));
        }
        self.password.validate()
    }

    #[must_use]
    pub fn idle_timeout(&self) -> Duration {
        Duration::minutes(self.session_idle_minutes)
    }
}

/// The application: storage plus settings. Cheap to clone; shared by all requests.
#[derive(Clone, Debug)]
pub struct App {
    store: Store,
    security: Arc<SecuritySettings>,
    dummy_hash: Arc<tokio::sync::OnceCell<String>>,
    /// Published designs by (study id, version number), parsed once: published versions never
    /// change (the database refuses it), so an entry never goes stale.
    designs: Arc<std::sync::Mutex<DesignCache>>,
    /// The progress of the import jobs this server runs.
    jobs: Arc<std::sync::Mutex<jobs::RunningJobs>>,
    /// Where extract runs keep their files, and how many run at once.
    extracts: Arc<extract::ExtractSettings>,
}

/// Parsed designs by (study id, version number).
type DesignCache = std::collections::HashMap<(i64, i32), Arc<StudyDesign>>;

/// How many parsed designs the cache keeps before it starts over.
const DESIGN_CACHE_SIZE: usize = 64;

impl App {
    #[must_use]
    pub fn new(store: Store, security: SecuritySettings) -> Self {
        Self {
            store,
            security: Arc::new(security),
            dummy_hash: Arc::default(),
            designs: Arc::default(),
            jobs: Arc::default(),
            extracts: Arc::new(extract::ExtractSettings::new(std::env::temp_dir().join("casebook-extracts"), 2)),
        }
    }

    /// Extract runs keep their files under `dir` (one folder per run); at most `concurrent`
    /// run at once, the others wait in the queue; format modules are read from `modules` too.
    #[must_use]
    pub fn with_extracts(
        mut self,
        dir: std::path::PathBuf,
        concurrent: usize,
        modules: Option<std::path::PathBuf>,
    ) -> Self {
        let settings = extract::ExtractSettings::new(dir, concurrent);
        self.extracts = Arc::new(match modules {
            Some(m) => settings.with_modules(m),
            None => settings,
        });
        self
    }

    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    #[must_use]
    pub fn security(&self) -> &SecuritySettings {
        &self.security
    }

    /// Hashes a password with the configured argon2id cost.
    ///
    /// # Errors
    /// Internal, when hashing fails.
    pub async fn hash_password(&self, password: &str) -> Result<String, AppError> {
        secrets::hash_password(password.to_owned(), self.security.argon2_memory_kib, self.security.argon2_iterations)
            .await
    }

    /// The design in Production (its number and document), parsed once per version.
    ///
    /// # Errors
    /// Storage failures; internal when the stored document does not parse.
    pub(crate) async fn production_design_opt(
        &self,
        study_id: i64,
    ) -> Result<Option<(i32, Arc<StudyDesign>)>, AppError> {
        let Some(number) = self.store.design_production_number(study_id).await? else {
            return Ok(None);
        };
        if let Some(d) = self.designs.lock().map_err(|_| poisoned())?.get(&(study_id, number)) {
            return Ok(Some((number, Arc::clone(d))));
        }
        let Some(row) = self.store.design_production_version(study_id).await? else {
            return Ok(None);
        };
        let design: Arc<StudyDesign> =
            Arc::new(serde_json::from_str(&row.document).map_err(error::anyhow_like::internal)?);
        let mut cache = self.designs.lock().map_err(|_| poisoned())?;
        if cache.len() >= DESIGN_CACHE_SIZE {
            cache.clear();
        }
        cache.insert((study_id, row.number), Arc::clone(&design));
        Ok(Some((row.number, design)))
    }

    /// A hash of a random password, made once, to verify against for unknown usernames.
    async fn dummy_hash(&self) -> Result<String, AppError> {
        self.dummy_hash
            .get_or_try_init(|| {
                secrets::hash_password(
                    secrets::random_token(16),
                    self.security.argon2_memory_kib,
                    self.security.argon2_iterations,
                )
            })
            .await
            .cloned()
    }
}

fn poisoned() -> AppError {
    error::anyhow_like::msg("the design cache is unusable (a thread panicked while holding it)")
}
