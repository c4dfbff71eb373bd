//! The config files clients name, cached and read again whenever the file changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config;
use crate::error::Result;

/// Config files as clients name them, read again whenever the file changes.
#[derive(Debug, Default)]
pub struct ConfigCache {
    files: Mutex<HashMap<PathBuf, Cached>>,
}

/// What tells a rewritten file apart (`login` replaces the config by a rename): mtime, inode, size.
type FileStamp = (std::time::SystemTime, u64, u64);
type Cached = (Option<FileStamp>, Arc<config::ConfigFile>);

impl ConfigCache {
    pub fn get(&self, path: &Path) -> Result<Arc<config::ConfigFile>> {
        let stamp = std::fs::metadata(path).ok().and_then(|m| {
            #[cfg(unix)]
            let ino = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let ino = 0;
            Some((m.modified().ok()?, ino, m.len()))
        });
        let mut files = self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, file)) = files.get(path)
            && *seen == stamp
        {
            return Ok(file.clone());
        }
        let file = Arc::new(config::load(path)?);
        files.insert(path.to_path_buf(), (stamp, file.clone()));
        Ok(file)
    }

    pub fn clear(&self) {
        self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}
