//! Artifacts of one run: files a job uploads and later jobs download.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::paths;

#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub n_files: usize,
    pub size: u64,
    pub location: PathBuf,
}

impl ArtifactStore {
    pub fn new(root: &Path) -> ArtifactStore {
        ArtifactStore { root: root.to_path_buf() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn valid_name(name: &str) -> Result<(), String> {
        if name.is_empty()
            || name.contains(['/', '\\', '\0', ':', '"', '<', '>', '|', '*', '?'])
            || name == "."
            || name == ".."
        {
            return Err(format!(
                "artifact name `{name}` is not valid: it must be non-empty and hold none of / \\ : \" < > | * ?"
            ));
        }
        Ok(())
    }

    /// Stores the files at or below `paths`, relative to their least common ancestor, as on GitHub.
    pub fn upload(&self, name: &str, paths: &[PathBuf], overwrite: bool) -> Result<Uploaded, String> {
        Self::valid_name(name)?;
        let files = paths::files_below(paths);
        let target = self.root.join(name);
        if target.exists() {
            if !overwrite {
                return Err(format!(
                    "an artifact named `{name}` was already uploaded in this run; give each upload its own name (e.g. with the matrix values) or set `overwrite: true`"
                ));
            }
            fs::remove_dir_all(&target).map_err(|e| e.to_string())?;
        }
        let base = common_ancestor(paths);
        let mut size = 0;
        for file in &files {
            let relative = file.strip_prefix(&base).unwrap_or(file);
            let relative = if relative.as_os_str().is_empty() {
                Path::new(file.file_name().unwrap_or_default())
            } else {
                relative
            };
            let dest = target.join(relative);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            size += fs::copy(file, &dest).map_err(|e| format!("cannot copy {}: {e}", file.display()))?;
        }
        fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        Ok(Uploaded { n_files: files.len(), size, location: target })
    }

    /// Copies artifact `name` (or, with `None`, every artifact into a folder of its name) to `dest`.
    pub fn download(&self, name: Option<&str>, dest: &Path) -> Result<usize, String> {
        match name {
            Some(name) => {
                Self::valid_name(name)?;
                let source = self.root.join(name);
                if !source.is_dir() {
                    let known = self.list().join(", ");
                    return Err(format!(
                        "no artifact named `{name}` in this run (uploaded so far: {})",
                        if known.is_empty() { "none" } else { &known }
                    ));
                }
                copy_tree(&source, dest).map_err(|e| e.to_string())
            }
            None => {
                let mut n = 0;
                for name in self.list() {
                    n += copy_tree(&self.root.join(&name), &dest.join(&name)).map_err(|e| e.to_string())?;
                }
                Ok(n)
            }
        }
    }

    pub fn list(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.root)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn common_ancestor(paths: &[PathBuf]) -> PathBuf {
    let mut iter = paths.iter();
    let Some(first) = iter.next() else { return PathBuf::new() };
    let mut base =
        if first.is_dir() { first.clone() } else { first.parent().map(Path::to_path_buf).unwrap_or_default() };
    for path in iter {
        while !path.starts_with(&base) {
            if !base.pop() {
                break;
            }
        }
    }
    base
}

fn copy_tree(source: &Path, dest: &Path) -> io::Result<usize> {
    let mut n = 0;
    fs::create_dir_all(dest)?;
    let mut failure = None;
    paths::walk(source, &mut |p| {
        if failure.is_some() {
            return;
        }
        let relative = p.strip_prefix(source).unwrap_or(p);
        let target = dest.join(relative);
        let result = if p.is_dir() { fs::create_dir_all(&target) } else { fs::copy(p, &target).map(|_| n += 1) };
        if let Err(e) = result {
            failure = Some(e);
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(n),
    }
}
