//! What an image holds, for its SBOM: the image is saved from the engine (`GET /images/{name}/get`,
//! a tar of its layers), and its layers are read in order for the OS package databases (Debian's,
//! Alpine's) and the lock files they carry — a later layer's copy of a file replaces an earlier
//! one's, a whiteout removes it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use super::DockerEngine;

/// Files larger than this are not read (no package database or lock file is).
const MAX_FILE: u64 = 32 << 20;

impl DockerEngine {
    /// The packages `image` holds, read from its layers (saved to `scratch`, removed after).
    pub async fn image_packages(&self, image: &str, scratch: &Path) -> Result<Vec<spec::deps::Package>, String> {
        let saved = scratch.join("image-save.tar");
        let mut file = tokio::fs::File::create(&saved).await.map_err(|e| format!("{}: {e}", saved.display()))?;
        let mut stream = self.client().export_image(image);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("cannot save image {image}: {e}"))?;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await.map_err(|e| e.to_string())?;
        }
        drop(file);
        let path = saved.clone();
        let files = tokio::task::spawn_blocking(move || catalog(&path)).await.map_err(|e| e.to_string())?;
        if let Err(error) = tokio::fs::remove_file(&saved).await {
            tracing::warn!("cannot remove {}: {error}", saved.display());
        }
        let mut packages = Vec::new();
        for (path, text) in files? {
            if let Ok(found) = spec::deps::packages(&path, &text) {
                packages.extend(found);
            }
        }
        packages.sort();
        packages.dedup();
        Ok(packages)
    }
}

/// What one layer adds (wanted files) and removes (whiteouts).
#[derive(Default)]
struct Layer {
    files: BTreeMap<String, String>,
    removed: Vec<String>,
}

/// The package databases and lock files of a saved image, by path, as its last layer has them.
/// One pass over the archive; the layers are applied in the manifest's order at the end.
fn catalog(saved: &PathBuf) -> Result<BTreeMap<String, String>, String> {
    let mut manifest = String::new();
    let mut layers: BTreeMap<String, Layer> = BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(saved).map_err(|e| e.to_string())?);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let name = entry.path().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
        if name == "manifest.json" {
            entry.read_to_string(&mut manifest).map_err(|e| e.to_string())?;
        } else if name.ends_with(".tar") || name.starts_with("blobs/") {
            // A blob that is no tar (an image's configuration) reads as an empty layer.
            layers.insert(name, read_layer(entry).unwrap_or_default());
        }
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&manifest).map_err(|e| format!("the saved image has no readable manifest.json: {e}"))?;
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for name in manifest[0]["Layers"].as_array().into_iter().flatten().filter_map(|l| l.as_str()) {
        let Some(layer) = layers.remove(name) else { continue };
        for removed in &layer.removed {
            files.retain(|p, _| p != removed && !p.starts_with(&format!("{removed}/")));
        }
        files.extend(layer.files);
    }
    Ok(files)
}

/// The wanted files one layer (a tar) adds or replaces, and what its whiteouts remove.
fn read_layer(layer: impl Read) -> Result<Layer, String> {
    let mut out = Layer::default();
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.to_string_lossy().trim_start_matches("./").to_string();
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
        if let Some(removed) = name.strip_prefix(".wh.") {
            out.removed.push(if dir.is_empty() { removed.to_string() } else { format!("{dir}/{removed}") });
            continue;
        }
        let wanted = spec::deps::OS_DATABASES.contains(&path.as_str()) || spec::deps::LOCK_FILES.contains(&name);
        if !wanted || !entry.header().entry_type().is_file() || entry.size() > MAX_FILE {
            continue;
        }
        let mut text = String::new();
        if entry.read_to_string(&mut text).is_ok() {
            out.files.insert(path, text);
        }
    }
    Ok(out)
}
