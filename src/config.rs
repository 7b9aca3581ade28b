//! Configuration: defaults, then a TOML file, then `CASEBOOK__SECTION__KEY` environment
//! variables, then command-line flags. Validated at start; every message names the setting.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub http: casebook_web::WebSettings,
    pub security: casebook_app::SecuritySettings,
    pub audit: AuditSettings,
    pub extract: ExtractSettings,
    pub mail: casebook_app::mail::MailSettings,
    pub log: LogSettings,
}

#[derive(Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub bind: String,
    pub data_dir: PathBuf,
    /// PostgreSQL URL; empty means the embedded SQLite file in `data_dir`.
    pub database_url: Option<String>,
    pub max_connections: u32,
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(redact))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("casebook-data"),
            database_url: None,
            max_connections: 10,
        }
    }
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// How often the background sealer extends the hash chain.
    pub seal_interval_seconds: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { seal_interval_seconds: 2 }
    }
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractSettings {
    /// How many extract runs run at once (the others wait in the queue).
    pub concurrent: usize,
    /// Finished runs' files are removed after this many days (their record stays).
    pub retention_days: u32,
}

impl Default for ExtractSettings {
    fn default() -> Self {
        Self { concurrent: 2, retention_days: 90 }
    }
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A tracing filter such as `info` or `casebook_web=debug,info`.
    pub level: String,
    /// One JSON object per line instead of text.
    pub json: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { level: "info".into(), json: false }
    }
}

/// Hides the password in a database URL.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Settings {
    /// Loads and validates settings from the file, the environment and flags.
    ///
    /// # Errors
    /// A message naming the file, variable or setting that is wrong.
    pub fn load(
        file: Option<&Path>,
        data_dir: Option<PathBuf>,
        database_url: Option<String>,
        bind: Option<String>,
    ) -> Result<Self> {
        let mut b = config::Config::builder();
        if let Some(f) = file {
            if !f.exists() {
                bail!("configuration file {} does not exist", f.display());
            }
            b = b.add_source(config::File::from(f).format(config::FileFormat::Toml));
        }
        b = b.add_source(
            config::Environment::with_prefix("CASEBOOK").prefix_separator("__").separator("__").try_parsing(true),
        );
        let raw = b.build().context("reading the configuration")?;
        let mut s: Settings = raw.try_deserialize().context("invalid configuration")?;
        if let Some(d) = data_dir {
            s.server.data_dir = d;
        }
        if let Some(u) = database_url {
            s.server.database_url = Some(u);
        }
        if let Some(b) = bind {
            s.server.bind = b;
        }
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        let problems: Vec<String> = [
            self.security.validate().err(),
            self.mail.validate().err(),
            self.http.validate().err(),
            self.server.bind.parse::<std::net::SocketAddr>().err().map(|_| {
                format!("server.bind must be an address and port such as 127.0.0.1:8080 (got '{}')", self.server.bind)
            }),
            (!(1..=500).contains(&self.server.max_connections)).then(|| {
                format!("server.max_connections must be between 1 and 500 (got {})", self.server.max_connections)
            }),
            self.server
                .database_url
                .as_deref()
                .filter(|u| {
                    !u.is_empty()
                        && !u.starts_with("postgres://")
                        && !u.starts_with("postgresql://")
                        && !u.starts_with("sqlite:")
                })
                .map(|u| format!("server.database_url must start with postgres:// or sqlite: (got '{}')", redact(u))),
            (self.extract.concurrent == 0 || self.extract.concurrent > 16)
                .then(|| format!("extract.concurrent must be between 1 and 16 (got {})", self.extract.concurrent)),
            (self.extract.retention_days == 0).then(|| "extract.retention_days must be at least 1".to_owned()),
            (self.audit.seal_interval_seconds == 0 || self.audit.seal_interval_seconds > 3600).then(|| {
                format!(
                    "audit.seal_interval_seconds must be between 1 and 3600 (got {})",
                    self.audit.seal_interval_seconds
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        if problems.is_empty() { Ok(()) } else { bail!("invalid configuration:\n  {}", problems.join("\n  ")) }
    }

    /// The database to use: the PostgreSQL URL if set, else the SQLite file in the data
    /// directory (created with the directory on first start).
    ///
    /// # Errors
    /// When the data directory cannot be created.
    pub fn database_url(&self) -> Result<String> {
        if let Some(u) = self.server.database_url.as_deref().filter(|u| !u.is_empty()) {
            return Ok(u.to_owned());
        }
        let dir = &self.server.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating the data directory {}", dir.display()))?;
        Ok(format!("sqlite://{}", dir.join("casebook.db").display()))
    }
}

pub fn init_logging(log: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
