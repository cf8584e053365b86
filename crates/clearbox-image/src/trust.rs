//! `clearbox trust`: keys per image-name prefix, kept as a containers-compatible policy.json
//! (`transports.docker[PREFIX]`) plus key files in a trust directory, like rkt's `trust`.
//!
//! A prefix trusts either GPG keys (`signedBy`, simple signing) or cosign keys
//! (`sigstoreSigned`, `signedIdentity: matchRepository` — cosign signs the repository, not the
//! tag); any one of its keys is enough. A new policy file starts with `default: reject`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::policy::ImageName;
use crate::signature::{CosignKey, GpgKeys};

/// Where `trust add` keeps key files unless `[image] trust_dir` says otherwise.
pub const DEFAULT_TRUST_DIR: &str = "/etc/clearbox/trust";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Gpg,
    Cosign,
}

impl KeyKind {
    fn requirement(self) -> &'static str {
        match self {
            KeyKind::Gpg => "signedBy",
            KeyKind::Cosign => "sigstoreSigned",
        }
    }
}

/// One trusted key, as `trust list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrustedKey {
    pub prefix: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub key: String,
    pub file: String,
}

/// Checks a prefix: `registry[/repository...]`, no tag or digest, or `*.domain`.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let bad = |r: &str| Error::Trust(format!("invalid prefix {prefix:?}: {r}"));
    if prefix.is_empty() {
        return Err(bad("empty (give a registry or registry/repository)"));
    }
    if prefix.contains('@')
        || prefix
            .rsplit('/')
            .next()
            .is_some_and(|l| l.contains(':') && prefix.contains('/'))
    {
        return Err(bad(
            "a prefix names a registry or repository, not a tag or digest",
        ));
    }
    if prefix.starts_with("*.") {
        return Ok(());
    }
    if prefix.contains("//")
        || prefix.ends_with('/')
        || prefix.split('/').any(|c| c == ".." || c == ".")
    {
        return Err(bad("malformed"));
    }
    if prefix.contains('/') {
        let n = ImageName::parse(prefix).map_err(|e| bad(&e.to_string()))?;
        if n.repo() != prefix {
            return Err(bad(&format!("write it fully normalised: {}", n.repo())));
        }
    }
    Ok(())
}

/// Detects the key kind from its content.
pub fn detect_kind(bytes: &[u8]) -> Result<KeyKind> {
    if bytes.starts_with(b"-----BEGIN PUBLIC KEY-----") {
        return Ok(KeyKind::Cosign);
    }
    Ok(KeyKind::Gpg)
}

fn read_policy(path: &Path) -> Result<Value> {
    match fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| Error::Policy {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(json!({"default": [{"type": "reject"}]}))
        }
        Err(e) => Err(Error::io("cannot read policy", path, e)),
    }
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("cannot write", path, e)
    })
}

fn write_policy(path: &Path, v: &Value) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(v).map_err(|e| Error::Trust(e.to_string()))?;
    text.push(b'\n');
    write_atomic(path, &text, 0o644)
}

/// Trusts `key` (a GPG public key or a cosign public key) for images under `prefix`.
/// Returns the key's fingerprint / id.
pub fn add(
    policy: &Path,
    trust_dir: &Path,
    prefix: &str,
    key: &Path,
    kind: Option<KeyKind>,
) -> Result<String> {
    check_prefix(prefix)?;
    let bytes = fs::read(key).map_err(|e| Error::io("cannot read key", key, e))?;
    let kind = match kind {
        Some(k) => k,
        None => detect_kind(&bytes)?,
    };
    let (id, file) = match kind {
        KeyKind::Gpg => {
            let k = GpgKeys::parse(&bytes, &key.display().to_string())?;
            let fp = k.fingerprints().join("-");
            (fp.clone(), trust_dir.join(format!("gpg-{fp}.key")))
        }
        KeyKind::Cosign => {
            let k = CosignKey::parse(&bytes, &key.display().to_string())?;
            (k.id.clone(), trust_dir.join(format!("cosign-{}.pub", k.id)))
        }
    };
    let mut v = read_policy(policy)?;
    let scopes = v
        .as_object_mut()
        .ok_or_else(|| Error::Trust("policy is not a JSON object".into()))?
        .entry("transports")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| Error::Trust("policy transports is not an object".into()))?
        .entry("docker")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| Error::Trust("policy transports.docker is not an object".into()))?;
    let file_s = file.display().to_string();
    match scopes.get_mut(prefix) {
        None => {
            let req = match kind {
                KeyKind::Gpg => {
                    json!({"type": "signedBy", "keyType": "GPGKeys", "keyPaths": [file_s]})
                }
                KeyKind::Cosign => json!({"type": "sigstoreSigned", "keyPaths": [file_s],
                                          "signedIdentity": {"type": "matchRepository"}}),
            };
            scopes.insert(prefix.to_string(), json!([req]));
        }
        Some(reqs) => {
            let arr = reqs
                .as_array_mut()
                .ok_or_else(|| Error::Trust(format!("scope {prefix:?} is not a list")))?;
            let [req] = arr.as_mut_slice() else {
                return Err(Error::Trust(format!(
                    "scope {prefix:?} has several requirements; edit {} by hand",
                    policy.display()
                )));
            };
            let t = req.get("type").and_then(|t| t.as_str()).unwrap_or("");
            if t != kind.requirement() {
                return Err(Error::Trust(format!(
                    "prefix {prefix:?} already has a {t} requirement; `clearbox trust rm --prefix {prefix}` first"
                )));
            }
            let o = req
                .as_object_mut()
                .ok_or_else(|| Error::Trust("requirement is not an object".into()))?;
            let mut paths: Vec<Value> = o
                .remove("keyPaths")
                .and_then(|p| p.as_array().cloned())
                .unwrap_or_default();
            if let Some(p) = o.remove("keyPath") {
                paths.insert(0, p);
            }
            if !paths.iter().any(|p| p.as_str() == Some(file_s.as_str())) {
                paths.push(json!(file_s));
            }
            o.insert("keyPaths".into(), Value::Array(paths));
        }
    }
    write_atomic(&file, &bytes, 0o644)?;
    write_policy(policy, &v)?;
    Ok(id)
}

/// Every trusted key, per prefix.
pub fn list(policy: &Path) -> Result<Vec<TrustedKey>> {
    let v = match fs::read_to_string(policy) {
        Ok(t) => serde_json::from_str::<Value>(&t).map_err(|e| Error::Policy {
            path: policy.to_path_buf(),
            reason: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot read policy", policy, e)),
    };
    let mut out = Vec::new();
    let mut push_reqs = |prefix: &str, reqs: &Value| {
        for r in reqs.as_array().into_iter().flatten() {
            let t = r
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("?")
                .to_string();
            let paths: Vec<String> = r
                .get("keyPath")
                .into_iter()
                .chain(
                    r.get("keyPaths")
                        .and_then(|p| p.as_array())
                        .into_iter()
                        .flatten(),
                )
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            if paths.is_empty() {
                out.push(TrustedKey {
                    prefix: prefix.to_string(),
                    kind: t.clone(),
                    key: if r.get("keyData").is_some() {
                        "(keyData)".into()
                    } else {
                        "-".into()
                    },
                    file: "-".into(),
                });
            }
            for p in paths {
                out.push(TrustedKey {
                    prefix: prefix.to_string(),
                    kind: t.clone(),
                    key: key_id(&t, Path::new(&p)),
                    file: p,
                });
            }
        }
    };
    if let Some(d) = v.get("default") {
        push_reqs("(default)", d);
    }
    if let Some(scopes) = v.pointer("/transports/docker").and_then(|s| s.as_object()) {
        for (prefix, reqs) in scopes {
            push_reqs(prefix, reqs);
        }
    }
    Ok(out)
}

fn key_id(kind: &str, path: &Path) -> String {
    let Ok(bytes) = fs::read(path) else {
        return "(unreadable)".into();
    };
    match kind {
        "signedBy" => GpgKeys::parse(&bytes, "")
            .map(|k| k.fingerprints().join(","))
            .unwrap_or_else(|_| "(invalid)".into()),
        "sigstoreSigned" => CosignKey::parse(&bytes, "")
            .map(|k| k.id)
            .unwrap_or_else(|_| "(invalid)".into()),
        _ => "-".into(),
    }
}

/// Stops trusting `key` (a fingerprint/id, or its prefix, or a key file path) for `prefix`, or
/// every key of the prefix when `key` is None. Returns the key files no longer referenced that
/// were removed from the trust directory.
pub fn remove(
    policy: &Path,
    trust_dir: &Path,
    prefix: &str,
    key: Option<&str>,
) -> Result<Vec<PathBuf>> {
    let mut v = read_policy(policy)?;
    let listed = list(policy)?;
    let scopes = v
        .pointer_mut("/transports/docker")
        .and_then(|s| s.as_object_mut())
        .ok_or_else(|| Error::Trust(format!("no keys are trusted for {prefix:?}")))?;
    let reqs = scopes
        .get_mut(prefix)
        .ok_or_else(|| Error::Trust(format!("no keys are trusted for {prefix:?}")))?;
    let mut dropped: Vec<String> = Vec::new();
    match key {
        None => {
            dropped = listed
                .iter()
                .filter(|k| k.prefix == prefix)
                .map(|k| k.file.clone())
                .collect();
            scopes.remove(prefix);
        }
        Some(k) => {
            let want = k.to_ascii_uppercase();
            let matches: Vec<&TrustedKey> = listed
                .iter()
                .filter(|t| t.prefix == prefix)
                .filter(|t| {
                    t.file == k || (!k.is_empty() && t.key.to_ascii_uppercase().starts_with(&want))
                })
                .collect();
            if matches.is_empty() {
                return Err(Error::Trust(format!(
                    "key {k:?} is not trusted for {prefix:?}"
                )));
            }
            for r in reqs.as_array_mut().into_iter().flatten() {
                let Some(o) = r.as_object_mut() else { continue };
                let mut paths: Vec<Value> = o
                    .remove("keyPaths")
                    .and_then(|p| p.as_array().cloned())
                    .unwrap_or_default();
                if let Some(p) = o.remove("keyPath") {
                    paths.insert(0, p);
                }
                paths.retain(|p| {
                    let keep = !matches.iter().any(|m| Some(m.file.as_str()) == p.as_str());
                    if !keep {
                        dropped.push(p.as_str().unwrap_or_default().to_string());
                    }
                    keep
                });
                o.insert("keyPaths".into(), Value::Array(paths));
            }
            let empty = reqs.as_array().is_some_and(|a| {
                a.iter().all(|r| {
                    r.get("keyPaths")
                        .and_then(|p| p.as_array())
                        .is_some_and(|p| p.is_empty())
                        && r.get("keyData").is_none()
                })
            });
            if empty {
                scopes.remove(prefix);
            }
        }
    }
    write_policy(policy, &v)?;
    // Remove key files of ours that nothing references any more.
    let still: Vec<String> = list(policy)?.into_iter().map(|k| k.file).collect();
    let mut removed = Vec::new();
    for f in dropped {
        let p = PathBuf::from(&f);
        if p.parent() == Some(trust_dir) && !still.contains(&f) && fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosign_pem(seed: u8) -> String {
        use p256::pkcs8::EncodePublicKey as _;
        p256::ecdsa::SigningKey::from_slice(&[seed; 32])
            .unwrap()
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
    }

    #[test]
    fn add_list_remove_cosign_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let policy = tmp.path().join("policy.json");
        let dir = tmp.path().join("trust");
        let k1 = tmp.path().join("k1.pub");
        let k2 = tmp.path().join("k2.pub");
        fs::write(&k1, cosign_pem(1)).unwrap();
        fs::write(&k2, cosign_pem(2)).unwrap();
        let id1 = add(&policy, &dir, "r:5000/app", &k1, None).unwrap();
        add(&policy, &dir, "r:5000/app", &k2, None).unwrap();
        let v: Value = serde_json::from_str(&fs::read_to_string(&policy).unwrap()).unwrap();
        assert_eq!(v["default"][0]["type"], "reject");
        assert_eq!(
            v["transports"]["docker"]["r:5000/app"][0]["keyPaths"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        // The policy loads with the real parser.
        let files = crate::policy::PolicyFiles::read(&policy).unwrap();
        crate::policy::Policy::load(&files).unwrap();
        let l = list(&policy).unwrap();
        assert_eq!(l.iter().filter(|k| k.prefix == "r:5000/app").count(), 2);
        let removed = remove(&policy, &dir, "r:5000/app", Some(&id1)).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(
            list(&policy)
                .unwrap()
                .iter()
                .filter(|k| k.prefix == "r:5000/app")
                .count(),
            1
        );
        remove(&policy, &dir, "r:5000/app", None).unwrap();
        assert!(list(&policy)
            .unwrap()
            .iter()
            .all(|k| k.prefix != "r:5000/app"));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        assert!(remove(&policy, &dir, "r:5000/app", None).is_err());
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("127.0.0.1:5000/app").is_ok());
        assert!(check_prefix("127.0.0.1:5000").is_ok());
        assert!(check_prefix("quay.io").is_ok());
        assert!(check_prefix("r/app:1").is_err());
        assert!(check_prefix("r/app@sha256:00").is_err());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("r/../x").is_err());
    }
}
