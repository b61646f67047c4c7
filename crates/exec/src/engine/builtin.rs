//! The built-in actions: checkout, cache, artifacts and image builds.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use spec::workflow::BuiltinAction;

use super::leg::*;
use super::slots::*;
use super::*;

pub(super) type BuiltinResult = Result<(Status, BTreeMap<String, String>, Option<PostAction>), String>;

pub(super) async fn run_builtin(
    shared: &Arc<Shared>,
    action: BuiltinAction,
    inputs: &BTreeMap<String, String>,
    index: usize,
    dirs: &LegDirs,
    log: &dyn crate::LineSink,
) -> BuiltinResult {
    let request = &shared.request;
    let input = |key: &str| inputs.get(key).map(String::as_str).unwrap_or("");
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    let mut outputs = BTreeMap::new();
    match action {
        BuiltinAction::DockerImage => Err("docker:// steps run as containers, not as built-in actions".to_string()),
        BuiltinAction::BuildPush => {
            let engine = docker_engine(shared).await?;
            let context_dir = crate::paths::normalize(&dirs.workspace.join(input("context")));
            if !context_dir.starts_with(&dirs.workspace) || !context_dir.is_dir() {
                return Err(format!("build context `{}` is not a directory in the workspace", input("context")));
            }
            let dockerfile = if input("file").is_empty() {
                "Dockerfile".to_string()
            } else {
                let file = crate::paths::normalize(&dirs.workspace.join(input("file")));
                file.strip_prefix(&context_dir)
                    .map(|f| f.to_string_lossy().into_owned())
                    .map_err(|_| format!("the Dockerfile `{}` must lie inside the build context", input("file")))?
            };
            if !context_dir.join(&dockerfile).is_file() {
                return Err(format!(
                    "no Dockerfile at `{dockerfile}` in the build context; check `context` and `file`"
                ));
            }
            let list = |key: &str| -> Vec<String> {
                input(key).split(['\n', ',']).map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect()
            };
            let pairs = |key: &str| -> HashMap<String, String> {
                list(key)
                    .into_iter()
                    .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                    .collect()
            };
            let sha = &request.repo.sha;
            let short = &sha[..sha.len().min(12)];
            let mut tags = list("tags");
            if tags.is_empty() {
                let name = request
                    .repo
                    .repository
                    .to_ascii_lowercase()
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '/' && c != '-', "-");
                tags.push(format!("tandem/{name}:latest"));
            }
            // Every image is also tagged with the commit it was built from.
            let (repo, _) = crate::docker::split_tag(&tags[0]);
            tags.push(format!("{repo}:{short}"));
            let mut labels = pairs("labels");
            labels.insert("org.opencontainers.image.revision".into(), sha.clone());
            labels.insert("org.opencontainers.image.source".into(), request.repo.repository.clone());
            // The context is written to a file off the async threads and streamed to the engine.
            let context = dirs.files.join("context.tar");
            let (size, locks) = {
                let (dir, out) = (context_dir.clone(), context.clone());
                tokio::task::spawn_blocking(move || crate::docker::context_tar(&dir, &out))
                    .await
                    .map_err(|e| e.to_string())??
            };
            log.line(format!(
                "building {} from {} ({} bytes of context)",
                tags[0],
                if input("context").is_empty() { "." } else { input("context") },
                size
            ))
            .await;
            let push = input("push") == "true";
            let build = crate::docker::ImageBuild {
                context: context.clone(),
                dockerfile,
                tags,
                build_args: pairs("build-args"),
                labels,
                push,
            };
            let built = engine.build_and_push(build, log).await;
            if let Err(error) = tokio::fs::remove_file(&context).await {
                log.line(format!("warning: cannot remove the build context {}: {error}", context.display())).await;
            }
            let built = built?;
            log.line(format!("image {} tagged {}", built.id, built.tags.join(", "))).await;
            // The release deployments will ship: recorded as an artifact of the run.
            let record = dirs.temp.join("image.json");
            std::fs::write(&record, serde_json::to_vec_pretty(&built).unwrap_or_default())
                .map_err(|e| e.to_string())?;
            let slug: String =
                repo.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
            shared.artifacts.upload(&format!("image-{slug}"), &[record], true)?;
            // Its SBOM: what its layers hold (OS package databases, lock files); when the image
            // cannot be read back, the lock files its build context gave it.
            let (packages, from) = match engine.image_packages(&built.id, &dirs.temp).await {
                Ok(packages) => (packages, "its layers".to_string()),
                Err(error) => {
                    log.line(format!("warning: {error}; the SBOM lists the build context's lock files only")).await;
                    let mut packages = Vec::new();
                    for lock in &locks {
                        let text = std::fs::read_to_string(context_dir.join(lock)).unwrap_or_default();
                        match spec::deps::packages(lock, &text) {
                            Ok(found) => packages.extend(found),
                            Err(error) => log.line(format!("warning: {error}; left out of the SBOM")).await,
                        }
                    }
                    (packages, format!("{} lock file(s) of the build context", locks.len()))
                }
            };
            let subject = spec::deps::Subject { kind: "container", name: &repo, version: short };
            let now = jiff::Timestamp::now().to_string();
            let bom = spec::deps::cyclonedx(&subject, &packages, &now, env!("CARGO_PKG_VERSION"));
            let sbom = dirs.temp.join("sbom.cdx.json");
            std::fs::write(&sbom, serde_json::to_vec_pretty(&bom).unwrap_or_default()).map_err(|e| e.to_string())?;
            shared.artifacts.upload(&format!("sbom-{slug}"), &[sbom], true)?;
            log.line(format!(
                "SBOM of {repo}:{short}: {} package(s) from {from} (artifact sbom-{slug})",
                packages.len()
            ))
            .await;
            outputs.insert("imageid".into(), built.id.clone());
            outputs.insert("digest".into(), built.digest.clone().unwrap_or_default());
            outputs.insert("metadata".into(), serde_json::to_string(&built).unwrap_or_default());
            Ok((Status::Success, outputs, None))
        }
        BuiltinAction::Checkout => {
            if !input("repository").is_empty() && input("repository") != request.repo.repository {
                return Err(format!(
                    "checkout of another repository (`{}`) is not supported; only this run's repository can be checked out",
                    input("repository")
                ));
            }
            let dest = crate::paths::normalize(&dirs.workspace.join(input("path")));
            if !dest.starts_with(&dirs.workspace) {
                return Err(format!("checkout path `{}` leaves the workspace", input("path")));
            }
            let sha = if input("ref").is_empty() {
                request.repo.sha.clone()
            } else {
                git::repo::resolve_ref(&request.repo.root, input("ref")).await?
            };
            let worktree = request.worktree && input("ref").is_empty();
            log.line(format!(
                "checking out {} at {}{}",
                request.repo.repository,
                &sha[..sha.len().min(12)],
                if worktree { " with the working tree's changes" } else { "" }
            ))
            .await;
            git::repo::checkout(&request.repo.root, &sha, &dest, worktree).await?;
            outputs.insert("commit".to_string(), sha);
            outputs.insert("ref".to_string(), request.repo.git_ref.clone());
            Ok((Status::Success, outputs, None))
        }
        BuiltinAction::Cache | BuiltinAction::CacheRestore | BuiltinAction::CacheSave => {
            let Some(cache) = shared.cache.clone() else {
                return Err("the cache directory could not be opened".to_string());
            };
            let key = input("key").to_string();
            if key.is_empty() {
                return Err("the cache `key` is empty".to_string());
            }
            if key.contains(',') {
                return Err(format!("cache key `{key}` contains a comma, which is not allowed"));
            }
            let patterns: Vec<String> =
                input("path").lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
            use sha2::Digest;
            let version = hex::encode(sha2::Sha256::digest(patterns.join("\n").as_bytes()));
            let save_version = version.clone();
            if action == BuiltinAction::CacheSave {
                let resolved = crate::paths::resolve(&dirs.workspace, &home, &patterns);
                let scope = request.repo.repository.clone();
                let workspace = dirs.workspace.clone();
                let saved =
                    tokio::task::spawn_blocking(move || cache.save(&scope, &version, &key, &resolved, &workspace))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("cache save failed: {e}"))?;
                log.line(format!("cache save: {saved:?}")).await;
                return Ok((Status::Success, outputs, None));
            }
            let restore_keys: Vec<String> =
                input("restore-keys").lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
            let scope = request.repo.repository.clone();
            let workspace = dirs.workspace.clone();
            let lookup_key = key.clone();
            let found = tokio::task::spawn_blocking(move || {
                cache.restore(&scope, &version, &lookup_key, &restore_keys, &workspace)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cache restore failed: {e}"))?;
            let exact = found.as_ref().is_some_and(|f| f.exact);
            match &found {
                Some(restored) => {
                    log.line(format!(
                        "cache restored from key `{}` ({} entries){}",
                        restored.key,
                        restored.n_files,
                        if restored.exact { "" } else { ", a partial match" }
                    ))
                    .await
                }
                None => log.line(format!("cache not found for key `{key}`")).await,
            }
            outputs.insert("cache-hit".to_string(), exact.to_string());
            outputs.insert("cache-primary-key".to_string(), key.clone());
            outputs.insert("cache-matched-key".to_string(), found.as_ref().map(|f| f.key.clone()).unwrap_or_default());
            if found.is_none() && input("fail-on-cache-miss") == "true" {
                return Err(format!("no cache entry for key `{key}` and `fail-on-cache-miss` is set"));
            }
            let post = (action == BuiltinAction::Cache && !exact).then_some(PostAction {
                step: index,
                key,
                patterns,
                version: save_version,
            });
            Ok((Status::Success, outputs, post))
        }
        BuiltinAction::UploadArtifact => {
            let name = if input("name").is_empty() { "artifact" } else { input("name") };
            let patterns: Vec<String> = input("path").lines().map(str::to_string).collect();
            let resolved = crate::paths::resolve(&dirs.workspace, &home, &patterns);
            if resolved.is_empty() {
                let message = format!("no files were found with the provided path: {}", input("path").trim());
                return match input("if-no-files-found") {
                    "error" => Err(message),
                    "ignore" => Ok((Status::Success, outputs, None)),
                    _ => {
                        log.line(format!("warning: {message}. No artifact will be uploaded.")).await;
                        Ok((Status::Success, outputs, None))
                    }
                };
            }
            let (store, artifact, overwrite) =
                (shared.artifacts.clone(), name.to_string(), input("overwrite") == "true");
            let uploaded = tokio::task::spawn_blocking(move || store.upload(&artifact, &resolved, overwrite))
                .await
                .map_err(|e| e.to_string())??;
            log.line(format!(
                "artifact `{name}` uploaded: {} files, {} bytes, stored in {}",
                uploaded.n_files,
                uploaded.size,
                uploaded.location.display()
            ))
            .await;
            outputs.insert("artifact-id".to_string(), name.to_string());
            Ok((Status::Success, outputs, None))
        }
        BuiltinAction::DownloadArtifact => {
            let dest = crate::paths::normalize(&dirs.workspace.join(input("path")));
            // Downloads land in the job's own folders, never elsewhere on the machine.
            if !dest.starts_with(&dirs.workspace) && !dest.starts_with(&dirs.temp) {
                return Err(format!(
                    "download-artifact: `{}` is outside the workspace; give a path inside it (or under $RUNNER_TEMP)",
                    input("path")
                ));
            }
            let name = Some(input("name")).filter(|n| !n.is_empty());
            let (store, wanted, into) = (shared.artifacts.clone(), name.map(str::to_string), dest.clone());
            let n = tokio::task::spawn_blocking(move || store.download(wanted.as_deref(), &into))
                .await
                .map_err(|e| e.to_string())??;
            log.line(format!("downloaded {n} files to {}", dest.display())).await;
            outputs.insert("download-path".to_string(), dest.to_string_lossy().into_owned());
            Ok((Status::Success, outputs, None))
        }
    }
}
