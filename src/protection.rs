//! What protects columns: the policy file and the keyring, loaded together into one
//! generation. Startup (`session::Shared::new`), live reload (`observe::reload`) and the
//! lifecycle commands (`lifecycle::run`) all load through [`Sources::load`], so the
//! keyring is found and opened one way only. Nothing here logs or displays a key.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;

use crate::crypto::{CipherSuite, CryptoError, Keyring};
use crate::policy::{Policy, PolicyErrors};
use crate::sql::{AnalysisCache, NameSet};

/// The `keys:` section. The keyring source: a file (mode 0600) or an environment variable holding its text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub env: Option<String>,
}

/// Why a policy and keyring generation could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The policy file does not read, parse or validate (with its file:line problems).
    #[error("{0}")]
    Policy(PolicyErrors),
    /// A policy is configured but no `keys` section.
    #[error("keys: a policy needs `keys`")]
    NoKeys,
    /// The `keys` section names neither a file nor a variable.
    #[error("keys: set `file` or `env`")]
    NoKeySource,
    /// The keyring does not read or parse (never shows a key).
    #[error("keys: {0}")]
    Keyring(CryptoError),
    /// The keyring lacks a key the policy's columns need.
    #[error("keys: {0}")]
    Suite(CryptoError),
}

/// Where a generation is loaded from: the `policy` file and the `keys` section.
#[derive(Debug, Clone)]
pub struct Sources {
    pub policy: PathBuf,
    pub keys: Option<KeysConfig>,
}

/// One generation as loaded: the policy, its keyring and the column keys derived from them.
/// The data path's `Protection` is built from the policy and suite; the keyring is only
/// kept by the lifecycle commands (zeroized on drop).
pub struct Loaded {
    pub policy: Policy,
    pub keyring: Keyring,
    pub suite: CipherSuite,
}

impl Sources {
    /// The files a reload watches: the policy and, when it is a file, the keyring.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.policy.clone()];
        if let Some(f) = self.keys.as_ref().and_then(|k| k.file.clone()) {
            files.push(f);
        }
        files
    }

    /// Reads and validates the policy, then opens the keyring and derives the column keys.
    pub fn load(&self, generation: u64) -> Result<Loaded, LoadError> {
        let policy = Policy::load(&self.policy, generation).map_err(LoadError::Policy)?;
        let keys = self.keys.as_ref().ok_or(LoadError::NoKeys)?;
        let keyring = open_keyring(keys)?;
        let suite = CipherSuite::new(&keyring, &policy).map_err(LoadError::Suite)?;
        Ok(Loaded {
            policy,
            keyring,
            suite,
        })
    }
}

/// Opens the keyring the `keys` section names.
pub fn open_keyring(keys: &KeysConfig) -> Result<Keyring, LoadError> {
    match (&keys.file, &keys.env) {
        (Some(f), _) => Keyring::from_file(f),
        (None, Some(v)) => Keyring::from_env(v),
        (None, None) => return Err(LoadError::NoKeySource),
    }
    .map_err(LoadError::Keyring)
}

/// Everything derived from one policy + keyring generation, shared by all sessions.
pub struct Protection {
    pub policy: Arc<Policy>,
    pub suite: CipherSuite,
    pub names: NameSet,
    pub cache: AnalysisCache,
    pub in_list_cap: usize,
    /// The insider guard's view of this generation (honeytoken matcher, quotas on/off).
    pub guard: crate::guard::Compiled,
}

impl Protection {
    pub fn new(policy: Arc<Policy>, suite: CipherSuite, in_list_cap: usize) -> Protection {
        let names = NameSet::from_policy(&policy);
        let guard = crate::guard::Compiled::new(&policy);
        Protection {
            guard,
            policy,
            suite,
            names,
            cache: AnalysisCache::new(4096),
            in_list_cap,
        }
    }

    pub fn generation(&self) -> u64 {
        self.policy.generation()
    }

    /// Whether anything at all is protected.
    pub fn is_empty(&self) -> bool {
        self.policy.columns().is_empty()
    }
}
