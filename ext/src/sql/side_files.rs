//! The side files the queue tables (`hybrid_lock_waiters`,
//! `hybrid_lock_holder`) read.

use std::sync::Arc;

use crate::shared::SideFile;
use crate::stats::registry::{self as stats_registry, FileMetrics};

/// The databases this process has seen that have a side file to read,
/// each with it: what the queue tables show.
pub(crate) fn observed_side_files() -> Vec<(Arc<FileMetrics>, Arc<SideFile>)> {
    stats_registry::global()
        .files()
        .into_iter()
        .filter_map(|file| SideFile::observe(file.path()).map(|side| (file, side)))
        .collect()
}
