//! Release attestations: for each deployment Tandem plans, a CycloneDX 1.5 SBOM of the commit's
//! locked packages, and signed provenance — an in-toto v1 statement with an SLSA v1 predicate,
//! in a DSSE envelope signed with the server's Ed25519 key (the audit key). Both are kept under
//! `<data>/releases/<deployment>/`. An environment with `gates: { provenance: required }` deploys
//! only releases whose provenance verifies and whose commit is on a protected branch.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, Verifier};
use sha2::Digest;
use store::Deployment;

use crate::App;

const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

fn dir(app: &App, deployment: i64) -> PathBuf {
    app.config.data_dir.join("releases").join(deployment.to_string())
}

/// The SBOM and provenance of a deployment, when they were made.
pub fn files(app: &App, deployment: i64) -> (PathBuf, PathBuf) {
    let dir = dir(app, deployment);
    (dir.join("sbom.cdx.json"), dir.join("provenance.dsse.json"))
}

/// DSSE's pre-authentication encoding: what is signed.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Makes and keeps the SBOM and the signed provenance of `deployment` (event `release.attested`,
/// about `release/<deployment>`: the deployment's own record stays its moves).
pub async fn attest(app: &App, deployment: &Deployment, mirror: &Path) -> Result<(), String> {
    let repo = app.store.repo_by_id(deployment.repo_id).await.map_err(|e| e.to_string())?;
    let listed = git::repo::git(mirror, &["ls-tree", "-r", "--name-only", "--end-of-options", &deployment.sha])
        .await
        .map_err(|e| e.to_string())?;
    let mut packages = Vec::new();
    for file in
        listed.lines().filter(|f| spec::deps::LOCK_FILES.iter().any(|l| f == l || f.ends_with(&format!("/{l}"))))
    {
        if let Ok(text) = git::repo::git(mirror, &["show", &format!("{}:{file}", deployment.sha)]).await
            && let Ok(found) = spec::deps::packages(file, &text)
        {
            packages.extend(found);
        }
    }
    let now = store::rfc3339(jiff::Timestamp::now().as_millisecond());
    let subject = spec::deps::Subject { kind: "application", name: &deployment.service, version: &deployment.release };
    let bom = serde_json::to_vec_pretty(&spec::deps::cyclonedx(&subject, &packages, &now, env!("CARGO_PKG_VERSION")))
        .map_err(|e| e.to_string())?;
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": format!("{}@{}", deployment.service, deployment.release), "digest": {"gitCommit": deployment.sha}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://tandem.dev/release/v1",
                "externalParameters": {"repository": repo.name, "service": deployment.service, "environment": deployment.environment, "sha": deployment.sha},
                "resolvedDependencies": [
                    {"uri": format!("git+{}", git::redact_credentials(&repo.source)), "digest": {"gitCommit": deployment.sha}},
                    {"uri": "sbom.cdx.json", "digest": {"sha256": hex::encode(sha2::Sha256::digest(&bom))}},
                ],
            },
            "runDetails": {
                "builder": {"id": format!("tandem://{}", app.config.listen)},
                "metadata": {"invocationId": format!("deployment/{}", deployment.id), "startedOn": now},
            },
        },
    });
    let payload = serde_json::to_vec(&statement).map_err(|e| e.to_string())?;
    let key = crate::checkpoint::signing_key(&app.config.data_dir)?;
    let signature = key.sign(&pae(PAYLOAD_TYPE, &payload));
    let keyid = hex::encode(key.verifying_key().to_bytes());
    let envelope = serde_json::json!({
        "payloadType": PAYLOAD_TYPE,
        "payload": crate::encoding::base64(&payload),
        "signatures": [{"keyid": keyid, "sig": crate::encoding::base64(&signature.to_bytes())}],
    });
    let (sbom_path, provenance_path) = files(app, deployment.id);
    let dir = dir(app, deployment.id);
    tokio::fs::create_dir_all(&dir).await.map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    tokio::fs::write(&sbom_path, &bom).await.map_err(|e| e.to_string())?;
    tokio::fs::write(&provenance_path, serde_json::to_vec_pretty(&envelope).map_err(|e| e.to_string())?)
        .await
        .map_err(|e| e.to_string())?;
    let event = serde_json::json!({"sha": deployment.sha, "packages": packages.len(), "keyid": keyid});
    app.store
        .record_event("release.attested", &format!("release/{}", deployment.id), "tandem", event)
        .await
        .map_err(|e| e.to_string())
}

/// The statement of a DSSE envelope, when `public_key` (hex) signed it.
pub fn verify(envelope: &serde_json::Value, public_key: &str) -> Result<serde_json::Value, String> {
    if envelope["payloadType"].as_str() != Some(PAYLOAD_TYPE) {
        return Err("not an in-toto envelope".into());
    }
    let payload = envelope["payload"].as_str().and_then(crate::encoding::decode).ok_or("the payload is not base64")?;
    let key: [u8; 32] =
        hex::decode(public_key).ok().and_then(|b| b.try_into().ok()).ok_or("the public key is not 32 bytes of hex")?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| "not an Ed25519 key")?;
    let signed = envelope["signatures"].as_array().into_iter().flatten().any(|s| {
        s["sig"]
            .as_str()
            .and_then(crate::encoding::decode)
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .is_some_and(|bytes| key.verify(&pae(PAYLOAD_TYPE, &payload), &Signature::from_bytes(&bytes)).is_ok())
    });
    if !signed {
        return Err("no signature of the key verifies the provenance".into());
    }
    serde_json::from_slice(&payload).map_err(|e| format!("the statement: {e}"))
}

/// Why `deployment` may not go under `provenance: required`, or `None`: its provenance must
/// verify with this server's key, name its commit, and the commit must be on a protected branch.
pub async fn refusal(app: &App, deployment: &Deployment, mirror: &Path) -> Option<String> {
    let (_, path) = files(app, deployment.id);
    let Ok(text) = tokio::fs::read_to_string(&path).await else {
        return Some("no provenance signed by Tandem for this release".into());
    };
    let key = match crate::checkpoint::signing_key(&app.config.data_dir) {
        Ok(key) => hex::encode(key.verifying_key().to_bytes()),
        Err(error) => return Some(format!("cannot read the signing key: {error}")),
    };
    let envelope: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let statement = match verify(&envelope, &key) {
        Ok(statement) => statement,
        Err(error) => return Some(format!("its provenance does not verify: {error}")),
    };
    if statement["subject"][0]["digest"]["gitCommit"].as_str() != Some(deployment.sha.as_str()) {
        return Some("its provenance names another commit".into());
    }
    let repo = app.store.repo_by_id(deployment.repo_id).await.ok()?;
    let hosted = crate::code::hosting::path(app, &repo.name);
    let protected: Vec<String> = std::fs::read_to_string(hosted.join("tandem-protected"))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_else(|_| vec!["main".to_string()]);
    for branch in &protected {
        let on_branch =
            git::repo::git(mirror, &["merge-base", "--is-ancestor", &deployment.sha, &format!("refs/heads/{branch}")])
                .await;
        if on_branch.is_ok() {
            return None;
        }
    }
    Some(format!("its commit is on no protected branch ({})", protected.join(", ")))
}
