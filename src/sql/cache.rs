//! The LRU analysis cache, shared by all sessions.
//!
//! Keyed by the statement text (or, for statements whose analysis cannot depend on
//! literal values, the literal-stripped fingerprint), the parameter type OIDs, the
//! search_path, the policy generation, the catalog generation and the IN-list cap
//! (`force_full_analysis` only adds detail to plans), so an entry is
//! never reused where the analysis could differ. A lookup allocates nothing: entries
//! are found by a 64-bit hash and then compared field by field.
//!
//! Entries hold plans, never plaintext literals (see [`super::plan`]).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

use super::analyze::analyze_with_fingerprint;
use super::{fingerprint, AnalysisContext, Fingerprint, SqlError, StatementPlan};

/// The default number of cached query strings.
pub const DEFAULT_CAPACITY: usize = 4096;

struct Entry {
    text: Box<str>,
    by_fingerprint: bool,
    param_oids: Box<[u32]>,
    search_path: Box<[String]>,
    policy_generation: u64,
    schema_generation: u64,
    in_list_cap: usize,
    plans: Arc<[StatementPlan]>,
}

/// One analysis result: the plans (shared with the cache) and the fingerprint of the
/// text actually looked up, which the rewriter needs.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub plans: Arc<[StatementPlan]>,
    pub fingerprint: Fingerprint,
    /// Whether the plans came from the cache.
    pub hit: bool,
}

/// A thread-safe LRU cache of analyses.
pub struct AnalysisCache {
    entries: Mutex<LruCache<u64, Vec<Entry>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for AnalysisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalysisCache")
            .field("len", &self.len())
            .field("hits", &self.hits.load(Ordering::Relaxed))
            .field("misses", &self.misses.load(Ordering::Relaxed))
            .finish()
    }
}

fn key_hash(
    text: &str,
    by_fp: bool,
    oids: &[u32],
    path: &[String],
    pg: u64,
    sg: u64,
    cap: usize,
) -> u64 {
    let mut h = DefaultHasher::new();
    cap.hash(&mut h);
    text.hash(&mut h);
    by_fp.hash(&mut h);
    oids.hash(&mut h);
    path.hash(&mut h);
    pg.hash(&mut h);
    sg.hash(&mut h);
    h.finish()
}

impl AnalysisCache {
    /// A cache holding up to `capacity` query strings (at least one).
    pub fn new(capacity: usize) -> AnalysisCache {
        AnalysisCache {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<u64, Vec<Entry>>> {
        // A panic elsewhere cannot leave an entry half-written: recover the map.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The analysis of `sql`, from the cache when possible.
    pub fn analyze(
        &self,
        sql: &str,
        param_oids: &[u32],
        ctx: &AnalysisContext<'_>,
    ) -> Result<Analysis, SqlError> {
        let fp = fingerprint(sql);
        let by_fp = fp.cacheable;
        let text: &str = if by_fp { &fp.text } else { sql };
        let pg = ctx.policy.generation();
        let sg = ctx.schema.generation();
        let cap = ctx.in_list_cap;
        let h = key_hash(text, by_fp, param_oids, ctx.search_path, pg, sg, cap);
        {
            let mut map = self.lock();
            if let Some(bucket) = map.get(&h) {
                let found = bucket.iter().find(|e| {
                    e.by_fingerprint == by_fp
                        && &*e.text == text
                        && &*e.param_oids == param_oids
                        && &*e.search_path == ctx.search_path
                        && e.policy_generation == pg
                        && e.schema_generation == sg
                        && e.in_list_cap == cap
                });
                if let Some(e) = found {
                    let plans = Arc::clone(&e.plans);
                    drop(map);
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Analysis {
                        plans,
                        fingerprint: fp,
                        hit: true,
                    });
                }
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let plans: Arc<[StatementPlan]> = analyze_with_fingerprint(sql, &fp, ctx)?.into();
        let entry = Entry {
            text: text.into(),
            by_fingerprint: by_fp,
            param_oids: param_oids.into(),
            search_path: ctx.search_path.into(),
            policy_generation: pg,
            schema_generation: sg,
            in_list_cap: cap,
            plans: Arc::clone(&plans),
        };
        let mut map = self.lock();
        match map.get_mut(&h) {
            Some(bucket) => bucket.push(entry),
            None => {
                map.put(h, vec![entry]);
            }
        }
        drop(map);
        Ok(Analysis {
            plans,
            fingerprint: fp,
            hit: false,
        })
    }

    /// Drops every entry (on catalog refresh, for instance; generations make it optional).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Number of cached hash buckets (about the number of query shapes).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (hits, misses) since creation.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

impl Default for AnalysisCache {
    fn default() -> Self {
        AnalysisCache::new(DEFAULT_CAPACITY)
    }
}
