//! The temporary directory of one cluster, and the sweep of directories left by dead runs.
//!
//! Directories are named `<tmp>/flumen-kafka/<pid>-<seq>` so that a later run can tell
//! from the name that the process which made one is gone (e.g. killed with SIGKILL, when no
//! destructor or exit hook runs) and remove it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::process::pid_alive;

/// A directory removed on drop.
#[derive(Debug)]
pub(crate) struct TempRoot {
    path: PathBuf,
}

impl TempRoot {
    /// Creates a fresh directory for one cluster, after sweeping those of dead processes.
    pub(crate) fn create() -> Result<TempRoot> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir().join("flumen-kafka");
        std::fs::create_dir_all(&base)
            .map_err(|e| Error::io(format!("creating {}", base.display()), e))?;
        sweep(&base);
        let path = base.join(format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(TempRoot { path })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory now (idempotent).
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        self.remove();
    }
}

fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !pid_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
