//! The config files clients name, cached and read again whenever the file changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config;
use crate::error::Result;
use crate::sync::Locked as _;

/// Config files as clients name them, read again whenever the file changes; at most
/// [`MAX_CACHED`], the least recently used let go first. Reading blocks: call it off the runtime
/// thread ([`ConfigCache::load`]).
#[derive(Debug, Default)]
pub struct ConfigCache {
    files: Mutex<HashMap<PathBuf, Cached>>,
    uses: AtomicU64,
}

/// How many config files the daemon keeps parsed.
pub const MAX_CACHED: usize = 16;

/// The file's version, the parsed file, and when it was last used (a counter).
type Cached = (Option<crate::fs::FileVersion>, Arc<config::ConfigFile>, u64);

impl ConfigCache {
    /// The config file at `path`: from the cache when its file is unchanged (a `stat`, which
    /// opens nothing, so a FIFO cannot block it), else read on the runtime's blocking pool.
    pub async fn load(self: &Arc<Self>, path: &Path) -> Result<Arc<config::ConfigFile>> {
        if let Some(file) = self.cached(path) {
            return Ok(file);
        }
        let (cache, path) = (self.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || cache.get(&path))
            .await
            .map_err(|e| crate::error::Error::unexpected(format!("the config reading task failed: {e}")))?
    }

    /// The cached file, if the file at `path` is the one cached.
    fn cached(&self, path: &Path) -> Option<Arc<config::ConfigFile>> {
        let used = self.uses.fetch_add(1, Ordering::Relaxed);
        let version = crate::fs::file_version(path);
        let mut files = self.files();
        let (seen, file, last) = files.get_mut(path)?;
        if *seen != version {
            return None;
        }
        *last = used;
        Some(file.clone())
    }

    pub fn get(&self, path: &Path) -> Result<Arc<config::ConfigFile>> {
        if let Some(file) = self.cached(path) {
            return Ok(file);
        }
        let used = self.uses.fetch_add(1, Ordering::Relaxed);
        let version = crate::fs::file_version(path);
        let file = Arc::new(config::load(path)?);
        let mut files = self.files();
        files.insert(path.to_path_buf(), (version, file.clone(), used));
        while files.len() > MAX_CACHED {
            let oldest = files.iter().min_by_key(|(_, (_, _, last))| *last).map(|(p, _)| p.clone());
            oldest.map(|p| files.remove(&p));
        }
        Ok(file)
    }

    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Cached>> {
        self.files.locked()
    }

    /// How many files are cached (`status`).
    pub fn len(&self) -> usize {
        self.files().len()
    }

    pub fn clear(&self) {
        self.files().clear();
    }
}
