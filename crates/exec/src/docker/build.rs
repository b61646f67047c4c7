//! Image builds through the Engine API: the context archive (with `.dockerignore`), build, tag and push.

#[allow(unused_imports)]
use super::*;

/// An image to build: the context archive (a tar file, streamed to the engine), the Dockerfile's
/// path in it, tags (the first names the image), build arguments, labels, and whether to push
/// every tag.
#[derive(Debug, Clone, Default)]
pub struct ImageBuild {
    pub context: std::path::PathBuf,
    pub dockerfile: String,
    pub tags: Vec<String>,
    pub build_args: HashMap<String, String>,
    pub labels: HashMap<String, String>,
    pub push: bool,
}

/// What an image build produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuiltImage {
    /// The image's content id (`sha256:…`).
    pub id: String,
    pub tags: Vec<String>,
    /// The registry's manifest digest, once pushed.
    pub digest: Option<String>,
}

/// Writes the build context of `dir` to the tar file `out` and returns its size and the lock files
/// in it (for the image's SBOM): every file below `dir` except `.git` and what `.dockerignore`
/// lists (its patterns, `!` exceptions included).
/// Blocking file-system work: call it off the async threads.
pub fn context_tar(dir: &std::path::Path, out: &std::path::Path) -> Result<(u64, Vec<String>), String> {
    let ignore: Vec<String> = std::fs::read_to_string(dir.join(".dockerignore"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect();
    let file = std::fs::File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.follow_symlinks(false);
    let mut failure = None;
    let mut locks = Vec::new();
    crate::paths::walk(dir, &mut |path| {
        if failure.is_some() {
            return;
        }
        let Ok(relative) = path.strip_prefix(dir) else { return };
        let text = relative.to_string_lossy();
        if text == ".git" || text.starts_with(".git/") {
            return;
        }
        // A directory's pattern also covers what lies below it.
        let ignored = text
            .split('/')
            .scan(String::new(), |prefix, part| {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                Some(prefix.clone())
            })
            .any(|prefix| ci::filter::list_matches(&ignore, &prefix));
        if ignored || path.is_dir() {
            return;
        }
        if let Err(error) = builder.append_path_with_name(path, relative) {
            failure = Some(format!("cannot add {text} to the build context: {error}"));
        }
        let name = text.rsplit('/').next().unwrap_or(&text);
        if spec::deps::LOCK_FILES.contains(&name) {
            locks.push(text.into_owned());
        }
    });
    if let Some(error) = failure {
        return Err(error);
    }
    let mut written = builder.into_inner().map_err(|e| e.to_string())?;
    std::io::Write::flush(&mut written).map_err(|e| e.to_string())?;
    let size = std::fs::metadata(out).map(|m| m.len()).map_err(|e| e.to_string())?;
    locks.sort();
    Ok((size, locks))
}

/// The file at `path` as a stream of chunks, for a request body that never holds it whole.
fn file_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::try_unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; 256 * 1024];
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        chunk.truncate(n);
        Ok(Some((bytes::Bytes::from(chunk), file)))
    })
}

impl DockerEngine {
    /// Builds an image from a context archive, tags it, and pushes the tags when asked. Progress
    /// goes to `log`.
    pub async fn build_and_push(&self, build: ImageBuild, log: &dyn crate::LineSink) -> Result<BuiltImage, String> {
        use bollard::query_parameters::{BuildImageOptions, PushImageOptions, TagImageOptions};
        let ImageBuild { context, dockerfile, tags, build_args, labels, push } = build;
        let mut tags = tags;
        let dockerfile = dockerfile.as_str();
        let options = BuildImageOptions {
            dockerfile: dockerfile.to_string(),
            t: tags.first().cloned(),
            rm: true,
            buildargs: Some(build_args),
            labels: Some(labels),
            ..Default::default()
        };
        let file = tokio::fs::File::open(&context)
            .await
            .map_err(|e| format!("cannot read the build context {}: {e}", context.display()))?;
        let mut stream = self.docker.build_image(options, None, Some(bollard::body_try_stream(file_stream(file))));
        let mut id = None;
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| format!("image build failed: {e}"))?;
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                return Err(format!("image build failed: {error}"));
            }
            if let Some(text) = info.stream {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    log.line(line.to_string()).await;
                }
            }
            if let Some(image) = info.aux {
                id = image.id.or(id);
            }
        }
        let id = match id {
            Some(id) => id,
            None => self
                .docker
                .inspect_image(tags.first().map(String::as_str).unwrap_or_default())
                .await
                .ok()
                .and_then(|i| i.id)
                .ok_or("the build produced no image")?,
        };
        // Also tagged by content: `repo:sha256-<12 hex of the image id>`.
        if let Some(first) = tags.first() {
            let (repo, _) = split_tag(first);
            let content = id.trim_start_matches("sha256:");
            tags.push(format!("{repo}:sha256-{}", &content[..content.len().min(12)]));
        }
        let tags = tags.as_slice();
        for tag in tags.iter().skip(1) {
            let (repo, version) = split_tag(tag);
            self.docker
                .tag_image(&id, Some(TagImageOptions { repo: Some(repo), tag: Some(version) }))
                .await
                .map_err(|e| format!("cannot tag {tag}: {e}"))?;
        }
        let mut digest = None;
        if push {
            for tag in tags {
                let (repo, version) = split_tag(tag);
                let mut pushing = self.docker.push_image(
                    &repo,
                    Some(PushImageOptions { tag: Some(version.clone()), ..Default::default() }),
                    None,
                );
                while let Some(item) = pushing.next().await {
                    let info = item.map_err(|e| format!("cannot push {tag}: {e}"))?;
                    if let Some(error) = info.error_detail.and_then(|d| d.message) {
                        return Err(format!("cannot push {tag}: {error}"));
                    }
                    if let Some(status) = info.status {
                        // "<tag>: digest: sha256:… size: N"
                        if let Some(found) = status.split_whitespace().skip_while(|w| *w != "digest:").nth(1) {
                            digest = Some(found.to_string());
                            log.line(format!("pushed {tag} ({found})")).await;
                        }
                    }
                }
            }
        }
        Ok(BuiltImage { id, tags: tags.to_vec(), digest })
    }
}

/// `host:5000/team/app:1.2` → (`host:5000/team/app`, `1.2`); no tag means `latest`.
pub fn split_tag(reference: &str) -> (String, String) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (reference.to_string(), "latest".to_string()),
    }
}
