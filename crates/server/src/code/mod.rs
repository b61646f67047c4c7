//! Code management: hosted repositories over smart HTTP, change requests and their review, and
//! the merge queue that keeps each target branch green — for hosted repositories, and for those
//! on a forge (their pull requests and reviews arrive as webhooks).

pub mod changes;
pub mod forge;
pub mod hosting;
pub mod queue;

use std::path::PathBuf;

use store::Repo;

use crate::App;

/// The git directory changes of `repo` are reviewed and merged in: the hosted repository, or the
/// mirror of a repository on a forge.
pub fn git_dir(app: &App, repo: &Repo) -> PathBuf {
    let hosted = hosting::path(app, &repo.name);
    if hosted.is_dir() { hosted } else { crate::repos::mirror_path(app, repo) }
}

/// Whether `repo` has change requests here: hosted, or on a forge that reports them.
pub fn reviews_changes(app: &App, repo: &Repo) -> bool {
    hosting::path(app, &repo.name).is_dir() || repo.forge.is_some()
}
