//! Trust policy in containers' `policy.json` format (containers-policy.json(5)).
//!
//! Supported: `default` and the `docker` transport's scopes (`registry/repo:tag`,
//! `registry/repo`, its parent namespaces, `registry`, `*.domain`, and `""`), each a list of
//! requirements that must all accept: `insecureAcceptAnything`, `reject`, `signedBy`
//! (`keyType: GPGKeys`, `keyPath`/`keyPaths`/`keyData`) and `sigstoreSigned` with a public key
//! (`keyPath`/`keyPaths`/`keyData`), with `signedIdentity` `matchRepoDigestOrExact` (default),
//! `matchExact`, `matchRepository`, `exactReference` or `exactRepository`. Everything else
//! (Fulcio/Rekor, `remapIdentity`, other transports' scopes used by clearbox) is refused with an
//! error naming it, never ignored. Imported images are judged by the scope of their name.
//!
//! No policy file means "reject": signatures are checked by default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::signature::{self, Claim, CosignKey, GpgKeys, StoredSignature};
use crate::store::Verification;

/// Where the policy lives unless `[image] policy` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/clearbox/policy.json";

/// The policy file and every key file it names, read by root and handed to the worker (so the
/// unprivileged worker needs no access to /etc).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PolicyFiles {
    pub path: PathBuf,
    /// None: the file does not exist.
    pub text: Option<String>,
    /// keyPath -> content (base64).
    pub keys: BTreeMap<String, String>,
}

impl PolicyFiles {
    pub fn read(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("cannot read policy", path, e)),
        };
        let mut files = Self {
            path: path.to_path_buf(),
            text,
            keys: BTreeMap::new(),
        };
        if let Some(t) = &files.text {
            let raw = parse_raw(path, t)?;
            for req in raw.all_requirements() {
                for kp in req.key_paths() {
                    let bytes = std::fs::read(&kp).map_err(|e| Error::Policy {
                        path: path.to_path_buf(),
                        reason: format!("cannot read key file {kp}: {e}"),
                    })?;
                    files
                        .keys
                        .insert(kp, base64::engine::general_purpose::STANDARD.encode(bytes));
                }
            }
        }
        Ok(files)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    default: Option<Vec<RawReq>>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<RawReq>>>,
}

impl RawPolicy {
    fn all_requirements(&self) -> impl Iterator<Item = &RawReq> {
        self.default
            .iter()
            .flatten()
            .chain(self.transports.values().flat_map(|t| t.values().flatten()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
enum RawReq {
    #[serde(rename = "insecureAcceptAnything")]
    InsecureAcceptAnything {},
    #[serde(rename = "reject")]
    Reject {},
    #[serde(rename = "signedBy", rename_all = "camelCase")]
    SignedBy {
        key_type: String,
        key_path: Option<String>,
        key_paths: Option<Vec<String>>,
        key_data: Option<String>,
        signed_identity: Option<RawIdentity>,
    },
    #[serde(rename = "sigstoreSigned", rename_all = "camelCase")]
    SigstoreSigned {
        key_path: Option<String>,
        key_paths: Option<Vec<String>>,
        key_data: Option<String>,
        fulcio: Option<serde_json::Value>,
        rekor_public_key_path: Option<String>,
        rekor_public_key_data: Option<String>,
        signed_identity: Option<RawIdentity>,
    },
}

impl RawReq {
    fn key_paths(&self) -> Vec<String> {
        let (one, many) = match self {
            RawReq::SignedBy {
                key_path,
                key_paths,
                ..
            }
            | RawReq::SigstoreSigned {
                key_path,
                key_paths,
                ..
            } => (key_path, key_paths),
            _ => return Vec::new(),
        };
        one.iter().chain(many.iter().flatten()).cloned().collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum RawIdentity {
    MatchRepoDigestOrExact {},
    MatchExact {},
    MatchRepository {},
    #[serde(rename_all = "camelCase")]
    ExactReference {
        docker_reference: String,
    },
    #[serde(rename_all = "camelCase")]
    ExactRepository {
        docker_repository: String,
    },
    #[serde(rename_all = "camelCase")]
    RemapIdentity {
        #[allow(dead_code)]
        prefix: String,
    },
}

/// Which image name a signature must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    MatchRepoDigestOrExact,
    MatchExact,
    MatchRepository,
    ExactReference(String),
    ExactRepository(String),
}

/// One parsed requirement, keys loaded.
#[derive(Debug, Clone)]
pub enum Requirement {
    AcceptAnything,
    Reject,
    SignedBy {
        keys: GpgKeys,
        identity: Identity,
        key_desc: String,
    },
    Sigstore {
        keys: Vec<CosignKey>,
        identity: Identity,
        key_desc: String,
    },
}

impl Requirement {
    pub fn name(&self) -> &'static str {
        match self {
            Requirement::AcceptAnything => "insecureAcceptAnything",
            Requirement::Reject => "reject",
            Requirement::SignedBy { .. } => "signedBy",
            Requirement::Sigstore { .. } => "sigstoreSigned",
        }
    }
}

/// The image being judged: its normalised name parts.
#[derive(Debug, Clone)]
pub struct ImageName {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageName {
    pub fn parse(reference: &str) -> Result<Self> {
        let r = oci_client::Reference::try_from(reference).map_err(|e| Error::Reference {
            reference: reference.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            registry: r.registry().to_string(),
            repository: r.repository().to_string(),
            tag: r.tag().map(str::to_string),
            digest: r.digest().map(str::to_string),
        })
    }

    pub fn repo(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    pub fn whole(&self) -> String {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => format!("{}@{d}", self.repo()),
            (Some(t), None) => format!("{}:{t}", self.repo()),
            (None, None) => self.repo(),
        }
    }

    /// Scopes from the most to the least specific, as containers/image looks them up.
    fn scopes(&self) -> Vec<String> {
        let mut out = vec![self.whole(), self.repo()];
        let parts: Vec<&str> = self.repository.split('/').collect();
        for i in (1..parts.len()).rev() {
            out.push(format!("{}/{}", self.registry, parts[..i].join("/")));
        }
        out.push(self.registry.clone());
        let host = self.registry.split(':').next().unwrap_or("");
        let labels: Vec<&str> = host.split('.').collect();
        for i in 1..labels.len() {
            out.push(format!("*.{}", labels[i..].join(".")));
        }
        out
    }
}

/// A loaded policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub path: PathBuf,
    exists: bool,
    default: Option<Vec<Requirement>>,
    docker: BTreeMap<String, Vec<Requirement>>,
}

fn parse_raw(path: &Path, text: &str) -> Result<RawPolicy> {
    serde_json::from_str(text).map_err(|e| Error::Policy {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl Policy {
    pub fn load(files: &PolicyFiles) -> Result<Self> {
        let path = files.path.clone();
        let Some(text) = &files.text else {
            return Ok(Self {
                path,
                exists: false,
                default: None,
                docker: BTreeMap::new(),
            });
        };
        let raw = parse_raw(&path, text)?;
        let perr = |reason: String| Error::Policy {
            path: path.clone(),
            reason,
        };
        let conv = |reqs: &[RawReq], scope: &str| -> Result<Vec<Requirement>> {
            if reqs.is_empty() {
                return Err(perr(format!(
                    "scope {scope:?} has an empty requirement list"
                )));
            }
            reqs.iter()
                .map(|r| convert(r, files, &path, scope))
                .collect()
        };
        let default = match &raw.default {
            Some(d) => Some(conv(d, "default")?),
            None => None,
        };
        let mut docker = BTreeMap::new();
        for (transport, scopes) in &raw.transports {
            if transport != "docker" {
                // Scopes of other transports never apply to clearbox's images (all are named as
                // docker references); say so rather than pretend to honour them.
                tracing::debug!(
                    transport,
                    "policy transport ignored: clearbox names images as docker references"
                );
                continue;
            }
            for (scope, reqs) in scopes {
                docker.insert(scope.clone(), conv(reqs, scope)?);
            }
        }
        Ok(Self {
            path,
            exists: true,
            default,
            docker,
        })
    }

    /// The requirements for an image and a description of the scope they came from.
    pub fn requirements_for(&self, image: &ImageName) -> Result<(String, &[Requirement])> {
        for s in image.scopes() {
            if let Some(r) = self.docker.get(&s) {
                return Ok((format!("transports.docker[{s:?}]"), r));
            }
        }
        if let Some(r) = self.docker.get("") {
            return Ok(("transports.docker[\"\"]".into(), r));
        }
        match &self.default {
            Some(d) => Ok(("default".into(), d)),
            None => Err(Error::Refused {
                image: image.whole(),
                policy: self.path.display().to_string(),
                reason: if self.exists {
                    "no scope matches and the policy has no default".into()
                } else {
                    format!(
                        "no policy file, so no key is trusted; trust one with `clearbox trust add --prefix {} KEY`",
                        image.repo()
                    )
                },
            }),
        }
    }

    /// Whether evaluating `image` will look at simple signatures and/or cosign signatures.
    pub fn wants(&self, image: &ImageName) -> (bool, bool) {
        match self.requirements_for(image) {
            Ok((_, reqs)) => (
                reqs.iter()
                    .any(|r| matches!(r, Requirement::SignedBy { .. })),
                reqs.iter()
                    .any(|r| matches!(r, Requirement::Sigstore { .. })),
            ),
            Err(_) => (false, false),
        }
    }

    /// Judges an image whose name resolved to `digest`, given the signatures found (and where
    /// they were looked for, for the message).
    pub fn evaluate(
        &self,
        image: &ImageName,
        digest: &Digest,
        sigs: &[StoredSignature],
        looked_in: &str,
    ) -> Result<Verification> {
        let (scope, reqs) = self.requirements_for(image)?;
        let policy = format!("{} ({scope})", self.path.display());
        let refuse = |reason: String| Error::Refused {
            image: image.whole(),
            policy: policy.clone(),
            reason,
        };
        let mut accepted = Vec::new();
        let mut only_accept_anything = true;
        for req in reqs {
            match req {
                Requirement::AcceptAnything => {}
                Requirement::Reject => {
                    return Err(refuse("this scope rejects every image".into()));
                }
                Requirement::SignedBy {
                    keys,
                    identity,
                    key_desc,
                } => {
                    only_accept_anything = false;
                    let simple: Vec<Vec<u8>> = sigs
                        .iter()
                        .filter_map(|s| match s {
                            StoredSignature::SimpleSigning { message } => {
                                base64::engine::general_purpose::STANDARD
                                    .decode(message)
                                    .ok()
                            }
                            _ => None,
                        })
                        .collect();
                    if simple.is_empty() {
                        return Err(refuse(format!(
                            "no GPG signature found (looked in {looked_in}); a signature by {key_desc} is required"
                        )));
                    }
                    let k = first_valid(
                        &simple,
                        |m| signature::verify_simple(m, keys),
                        image,
                        digest,
                        identity,
                    )
                    .map_err(|why| refuse(no_valid(&why, key_desc)))?;
                    accepted.push(format!("signedBy key {k}"));
                }
                Requirement::Sigstore {
                    keys,
                    identity,
                    key_desc,
                } => {
                    only_accept_anything = false;
                    let cos: Vec<(Vec<u8>, &str)> = sigs
                        .iter()
                        .filter_map(|s| match s {
                            StoredSignature::Cosign { payload, signature } => {
                                base64::engine::general_purpose::STANDARD
                                    .decode(payload)
                                    .ok()
                                    .map(|p| (p, signature.as_str()))
                            }
                            _ => None,
                        })
                        .collect();
                    if cos.is_empty() {
                        return Err(refuse(format!(
                            "no cosign signature found (looked for the tag {}); a signature by {key_desc} is required",
                            cosign_tag(digest)
                        )));
                    }
                    let k = first_valid(
                        &cos,
                        |(p, s)| signature::verify_cosign(p, s, keys),
                        image,
                        digest,
                        identity,
                    )
                    .map_err(|why| refuse(no_valid(&why, key_desc)))?;
                    accepted.push(format!("sigstoreSigned key {k}"));
                }
            }
        }
        if only_accept_anything {
            return Ok(Verification::AcceptAnything { scope });
        }
        Ok(Verification::Verified {
            requirement: scope,
            key: accepted.join(", "),
        })
    }
}

/// The key of the first signature that verifies and names this image, or why none did.
fn first_valid<T>(
    candidates: &[T],
    verify: impl Fn(&T) -> std::result::Result<(Claim, String), String>,
    image: &ImageName,
    digest: &Digest,
    identity: &Identity,
) -> std::result::Result<String, Vec<String>> {
    let mut why = Vec::new();
    for c in candidates {
        match verify(c)
            .and_then(|(claim, k)| check_claim(&claim, image, digest, identity).map(|_| k))
        {
            Ok(k) => return Ok(k),
            Err(e) => why.push(e),
        }
    }
    Err(why)
}

fn no_valid(why: &[String], key_desc: &str) -> String {
    format!(
        "no valid signature: {}; the missing key is {key_desc}",
        why.join("; ")
    )
}

/// The tag under which cosign stores an image's signatures.
pub fn cosign_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

fn convert(r: &RawReq, files: &PolicyFiles, path: &Path, scope: &str) -> Result<Requirement> {
    let perr = |reason: String| Error::Policy {
        path: path.to_path_buf(),
        reason: format!("scope {scope:?}: {reason}"),
    };
    let key_bytes = |paths: Vec<String>, data: &Option<String>| -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for p in paths {
            let b = files
                .keys
                .get(&p)
                .ok_or_else(|| perr(format!("key file {p} was not read")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| perr(e.to_string()))?;
            out.push((p, bytes));
        }
        if let Some(d) = data {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(d)
                .map_err(|e| perr(format!("keyData is not base64: {e}")))?;
            out.push(("keyData".into(), bytes));
        }
        if out.is_empty() {
            return Err(perr("no keyPath, keyPaths or keyData".into()));
        }
        Ok(out)
    };
    let identity = |i: &Option<RawIdentity>| -> Result<Identity> {
        Ok(match i {
            None | Some(RawIdentity::MatchRepoDigestOrExact {}) => Identity::MatchRepoDigestOrExact,
            Some(RawIdentity::MatchExact {}) => Identity::MatchExact,
            Some(RawIdentity::MatchRepository {}) => Identity::MatchRepository,
            Some(RawIdentity::ExactReference { docker_reference }) => {
                Identity::ExactReference(docker_reference.clone())
            }
            Some(RawIdentity::ExactRepository { docker_repository }) => {
                Identity::ExactRepository(docker_repository.clone())
            }
            Some(RawIdentity::RemapIdentity { .. }) => {
                return Err(perr("signedIdentity remapIdentity is not supported".into()))
            }
        })
    };
    Ok(match r {
        RawReq::InsecureAcceptAnything {} => Requirement::AcceptAnything,
        RawReq::Reject {} => Requirement::Reject,
        RawReq::SignedBy {
            key_type,
            key_data,
            signed_identity,
            ..
        } => {
            if key_type != "GPGKeys" {
                return Err(perr(format!(
                    "signedBy keyType {key_type:?} is not supported (GPGKeys is)"
                )));
            }
            let mut keys = GpgKeys::default();
            let mut names = Vec::new();
            for (p, b) in key_bytes(r.key_paths(), key_data)? {
                let k = GpgKeys::parse(&b, &p).map_err(|e| perr(e.to_string()))?;
                names.push(format!("{} ({p})", k.fingerprints().join(", ")));
                keys.keys.extend(k.keys);
            }
            Requirement::SignedBy {
                keys,
                identity: identity(signed_identity)?,
                key_desc: names.join(" or "),
            }
        }
        RawReq::SigstoreSigned {
            key_data,
            fulcio,
            rekor_public_key_path,
            rekor_public_key_data,
            signed_identity,
            ..
        } => {
            if fulcio.is_some()
                || rekor_public_key_path.is_some()
                || rekor_public_key_data.is_some()
            {
                return Err(perr(
                    "sigstoreSigned with Fulcio/Rekor (keyless) is not supported; use a public key (keyPath)".into(),
                ));
            }
            let mut keys = Vec::new();
            let mut names = Vec::new();
            for (p, b) in key_bytes(r.key_paths(), key_data)? {
                let k = CosignKey::parse(&b, &p).map_err(|e| perr(e.to_string()))?;
                names.push(format!("cosign key {} ({p})", k.id));
                keys.push(k);
            }
            Requirement::Sigstore {
                keys,
                identity: identity(signed_identity)?,
                key_desc: names.join(" or "),
            }
        }
    })
}

/// Checks that a verified signature is for this image (digest and name).
fn check_claim(
    claim: &Claim,
    image: &ImageName,
    digest: &Digest,
    identity: &Identity,
) -> std::result::Result<(), String> {
    let signed = signature::claim_digest(claim)?;
    if &signed != digest {
        return Err(format!(
            "signature is for manifest {signed}, the image is {digest}"
        ));
    }
    let sig = ImageName::parse(&claim.docker_reference)
        .map_err(|e| format!("signature names {:?}: {e}", claim.docker_reference))?;
    // A reference without a tag parses with "latest"; keep what the signature said.
    let sig_has_tag = claim
        .docker_reference
        .rsplit('/')
        .next()
        .is_some_and(|l| l.contains(':'))
        || claim.docker_reference.contains('@');
    let matches = match identity {
        Identity::MatchRepository => sig.repo() == image.repo(),
        Identity::MatchRepoDigestOrExact if image.digest.is_some() => sig.repo() == image.repo(),
        Identity::MatchRepoDigestOrExact | Identity::MatchExact => {
            sig_has_tag && sig.whole() == image.whole()
        }
        Identity::ExactReference(r) => {
            ImageName::parse(r).map(|n| n.whole()).ok() == Some(sig.whole()) && sig_has_tag
        }
        Identity::ExactRepository(r) => {
            ImageName::parse(r).map(|n| n.repo()).ok() == Some(sig.repo())
        }
    };
    if !matches {
        return Err(format!(
            "signature is for {:?}, not {} ({identity:?})",
            claim.docker_reference,
            image.whole()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::load(&PolicyFiles {
            path: "/p.json".into(),
            text: Some(text.into()),
            keys: BTreeMap::new(),
        })
        .unwrap()
    }

    #[test]
    fn scopes_most_specific_first() {
        let p = policy(
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{
                "r:5000/ns":[{"type":"insecureAcceptAnything"}],
                "r:5000/ns/app:1":[{"type":"reject"}]}}}"#,
        );
        let d = Digest::of(b"m");
        let ok = ImageName::parse("r:5000/ns/app:2").unwrap();
        assert!(matches!(
            p.evaluate(&ok, &d, &[], "nowhere").unwrap(),
            Verification::AcceptAnything { .. }
        ));
        let exact = ImageName::parse("r:5000/ns/app:1").unwrap();
        let e = p
            .evaluate(&exact, &d, &[], "nowhere")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("r:5000/ns/app:1") && e.contains("rejects"),
            "{e}"
        );
        let other = ImageName::parse("r:5000/other:1").unwrap();
        let e = p
            .evaluate(&other, &d, &[], "nowhere")
            .unwrap_err()
            .to_string();
        assert!(e.contains("(default)"), "{e}");
    }

    #[test]
    fn no_policy_rejects_with_advice() {
        let p = Policy::load(&PolicyFiles {
            path: "/etc/clearbox/policy.json".into(),
            ..Default::default()
        })
        .unwrap();
        let img = ImageName::parse("r:5000/app:1").unwrap();
        let e = p
            .evaluate(&img, &Digest::of(b"x"), &[], "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("clearbox trust add --prefix r:5000/app"), "{e}");
    }

    #[test]
    fn unsupported_things_are_errors() {
        let bad = [
            r#"{"default":[{"type":"signedBy","keyType":"X509Certificates","keyData":""}]}"#,
            r#"{"default":[{"type":"sigstoreSigned","fulcio":{}}]}"#,
            r#"{"default":[]}"#,
            r#"{"default":[{"type":"nope"}]}"#,
        ];
        for b in bad {
            assert!(
                Policy::load(&PolicyFiles {
                    path: "/p".into(),
                    text: Some(b.into()),
                    keys: BTreeMap::new()
                })
                .is_err(),
                "{b}"
            );
        }
    }

    #[test]
    fn claims_must_name_the_image() {
        let img = ImageName::parse("r:5000/app:1").unwrap();
        let d = Digest::of(b"m");
        let c = |r: &str, dg: &Digest| Claim {
            docker_reference: r.into(),
            manifest_digest: dg.to_string(),
        };
        let exact = Identity::MatchRepoDigestOrExact;
        assert!(check_claim(&c("r:5000/app:1", &d), &img, &d, &exact).is_ok());
        assert!(check_claim(&c("r:5000/app:2", &d), &img, &d, &exact).is_err());
        assert!(check_claim(&c("r:5000/app", &d), &img, &d, &exact).is_err());
        assert!(check_claim(&c("r:5000/app", &d), &img, &d, &Identity::MatchRepository).is_ok());
        assert!(check_claim(&c("r:5000/app:1", &Digest::of(b"n")), &img, &d, &exact).is_err());
    }
}
