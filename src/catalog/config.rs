//! `catalog:` in pgcloak.yaml: how pgcloak opens its own catalog connections.
//!
//! PostgreSQL catalogs (pg_class, pg_attribute, pg_constraint, pg_depend) are per database,
//! so pgcloak keeps one catalog connection per database in use, opened lazily the first time
//! a session asks about that database. `databases` lists the ones resolved at startup, where
//! a policy column that does not resolve is a startup error. The connection target (host or
//! socket directory, port, TLS) is the `upstream:` section; only the login differs.

use std::fmt;

use serde::Deserialize;

use super::error::CatalogError;

/// The `catalog:` section. Its `Debug` never shows the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// The role pgcloak logs in as. It needs no privilege beyond reading the system catalogs.
    #[serde(default = "default_user")]
    pub user: String,
    /// The name of an environment variable holding the password (preferred over `password`).
    #[serde(default)]
    pub password_env: Option<String>,
    /// The password inline (discouraged: the config file is then a secret).
    #[serde(default)]
    pub password: Option<String>,
    /// Databases resolved at startup (and by `pgcloak check --database`). Any other database
    /// is resolved when a session first uses it.
    #[serde(default)]
    pub databases: Vec<String>,
    /// How long a schema snapshot or a login's role set is trusted before it is re-read,
    /// since DDL and GRANTs can also run directly against the database.
    #[serde(default = "default_refresh_secs")]
    pub refresh_secs: u64,
    /// At most this many per-database catalog connections stay open; the least recently
    /// used one is closed beyond that.
    #[serde(default = "default_max_databases")]
    pub max_databases: usize,
    /// The database pgcloak's one long-lived catalog connection sits on, LISTENing for
    /// the cut-overs of `pgcloak encrypt`/`decrypt`/`reencrypt` (which NOTIFY there too).
    /// Never an application database: an open connection would block its DROP DATABASE.
    #[serde(default = "default_maintenance_database")]
    pub maintenance_database: String,
}

fn default_user() -> String {
    "pgcloak".into()
}
fn default_refresh_secs() -> u64 {
    30
}
fn default_max_databases() -> usize {
    64
}
fn default_maintenance_database() -> String {
    "postgres".into()
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            user: default_user(),
            password_env: None,
            password: None,
            databases: Vec::new(),
            refresh_secs: default_refresh_secs(),
            max_databases: default_max_databases(),
            maintenance_database: default_maintenance_database(),
        }
    }
}

impl fmt::Debug for CatalogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogConfig")
            .field("user", &self.user)
            .field("password_env", &self.password_env)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("databases", &self.databases)
            .field("refresh_secs", &self.refresh_secs)
            .field("max_databases", &self.max_databases)
            .field("maintenance_database", &self.maintenance_database)
            .finish()
    }
}

impl CatalogConfig {
    /// The password to log in with: `password_env`'s variable if set, else `password`.
    /// A named variable that is unset or empty is an error, never a silent fallback.
    pub fn resolve_password(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, CatalogError> {
        if let Some(var) = &self.password_env {
            return match env(var) {
                Some(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(CatalogError::Config(format!(
                    "catalog.password_env names `{var}`, but that environment variable is unset \
                     or empty; export it or remove password_env"
                ))),
            };
        }
        Ok(self.password.clone())
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), CatalogError> {
        if self.user.is_empty() {
            return Err(CatalogError::Config(
                "catalog.user must not be empty".into(),
            ));
        }
        if self.refresh_secs == 0 {
            return Err(CatalogError::Config(
                "catalog.refresh_secs must be at least 1".into(),
            ));
        }
        if self.max_databases == 0 {
            return Err(CatalogError::Config(
                "catalog.max_databases must be at least 1".into(),
            ));
        }
        if self.maintenance_database.is_empty() {
            return Err(CatalogError::Config(
                "catalog.maintenance_database must not be empty".into(),
            ));
        }
        if self.databases.iter().any(String::is_empty) {
            return Err(CatalogError::Config(
                "catalog.databases must not contain an empty name".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_unknown_keys_are_refused() {
        let c: CatalogConfig = serde_saphyr::from_str("{}").unwrap();
        assert_eq!(c.user, "pgcloak");
        assert_eq!(c.refresh_secs, 30);
        assert!(c.databases.is_empty());
        assert!(serde_saphyr::from_str::<CatalogConfig>("{ usr: x }").is_err());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = CatalogConfig {
            password: Some("hunter2-secret".into()),
            ..CatalogConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn password_env_wins_and_an_unset_variable_is_an_error() {
        let c = CatalogConfig {
            password_env: Some("PW".into()),
            password: Some("inline".into()),
            ..CatalogConfig::default()
        };
        let got = c.resolve_password(|k| (k == "PW").then(|| "from-env".into()));
        assert_eq!(got.unwrap().as_deref(), Some("from-env"));
        let err = c.resolve_password(|_| None).unwrap_err().to_string();
        assert!(err.contains("`PW`"), "{err}");
        let inline = CatalogConfig {
            password: Some("inline".into()),
            ..CatalogConfig::default()
        };
        assert_eq!(
            inline.resolve_password(|_| None).unwrap().as_deref(),
            Some("inline")
        );
    }

    #[test]
    fn zero_refresh_is_refused() {
        let c = CatalogConfig {
            refresh_secs: 0,
            ..CatalogConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
