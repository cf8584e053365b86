//! Getting images into the store (runs in the unprivileged fetch worker): pull from a registry
//! (OCI distribution API, `oci-client`), import from an OCI layout, an `oci-archive` or a
//! `docker-archive`. Either way: the name's manifest digest is judged by the policy *before* any
//! layer is fetched, every blob is checked against its digest, every layer's uncompressed
//! stream against the config's `diff_ids`, and the layers are unpacked safely
//! ([`crate::unpack`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::policy::{cosign_tag, ImageName, Policy};
use crate::signature::{
    StoredSignature, COSIGN_ANNOTATION, COSIGN_PAYLOAD_MEDIA_TYPE, MAX_SIGNATURE,
};
use crate::store::{read_limited, ImageRecord, Store, Verification};
use crate::unpack::{self, Unpacker, META_FILE};

mod registry;
use registry::Registry;

/// Manifests and configs larger than this are refused.
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Fetch settings from `[image]` in config.toml.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FetchOptions {
    /// Registries spoken to over plain HTTP (`host:port`), e.g. a local test registry.
    pub insecure_registries: Vec<String>,
    /// Where simple signatures live: a `file://` lookaside directory (as skopeo's
    /// registries.d `lookaside`/`sigstore`), laid out `<dir>/<repository>@sha256=<hex>/signature-N`.
    pub lookaside: Option<String>,
    /// `--insecure-skip-verify`.
    pub skip_verify: bool,
}

/// Where an image comes from.
trait Source {
    /// Makes sure the blob is in the store, checked against its digest.
    fn blob(&mut self, store: &Store, d: &Digest, what: &str) -> Result<()>;
}

/// Pulls `reference` from its registry.
pub fn pull(
    store: &Store,
    policy: &Policy,
    opts: &FetchOptions,
    reference: &str,
) -> Result<ImageRecord> {
    let name = ImageName::parse(reference)?;
    let oref = oci_client::Reference::try_from(reference).map_err(|e| Error::Reference {
        reference: reference.to_string(),
        reason: e.to_string(),
    })?;
    let mut reg = Registry::new(&oref, opts)?;
    let (top, _) = reg.manifest(&oref)?;
    let top_digest = Digest::of(&top);
    if let Some(want) = oref.digest() {
        let want = Digest::parse(want)?;
        if want != top_digest {
            return Err(Error::Digest {
                what: format!("manifest of {reference}"),
                expected: want.to_string(),
                actual: top_digest.to_string(),
            });
        }
    }
    let (mut sigs, mut looked) = lookaside_signatures(opts, &name, &top_digest)?;
    if !opts.skip_verify {
        let (cos, where_) = reg.cosign_signatures(&oref, &top_digest);
        sigs.extend(cos);
        looked.push_str(&format!("; {where_}"));
    }
    ingest(
        store, policy, opts, &name, top, sigs, &looked, &mut reg, "registry",
    )
}

/// Root side of a layout import: writes the OCI layout directory `dir` as a tar (`oci-layout`,
/// `index.json`, `blobs/<alg>/<hex>`) without following symlinks, for the worker's stdin.
pub fn write_layout_tar(dir: &Path, out: impl Write) -> Result<()> {
    let mut b = tar::Builder::new(out);
    let mut add = |rel: &str| -> Result<()> {
        let p = dir.join(rel);
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .map_err(|e| Error::io("cannot read the layout file", &p, e))?;
        let meta = f.metadata().map_err(|e| Error::io("cannot stat", &p, e))?;
        if !meta.is_file() {
            return Err(Error::invalid(
                p.display().to_string(),
                "not a regular file",
            ));
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(meta.len());
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, rel, f)
            .map_err(|e| Error::io("cannot stream the layout file", &p, e))
    };
    add("oci-layout")?;
    add("index.json")?;
    let blobs = dir.join("blobs");
    for alg in fs::read_dir(&blobs).map_err(|e| Error::io("cannot list", &blobs, e))? {
        let alg = alg.map_err(|e| Error::io("cannot list", &blobs, e))?;
        let an = alg.file_name().to_string_lossy().into_owned();
        if !alg.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let ad = blobs.join(&an);
        for blob in fs::read_dir(&ad).map_err(|e| Error::io("cannot list", &ad, e))? {
            let blob = blob.map_err(|e| Error::io("cannot list", &ad, e))?;
            let bn = blob.file_name().to_string_lossy().into_owned();
            add(&format!("blobs/{an}/{bn}"))?;
        }
    }
    b.into_inner()
        .map_err(|e| Error::io("cannot stream the layout", dir, e))?;
    Ok(())
}

/// Imports an archive read from `r`: an `oci-archive`, a `docker-archive` (detected from the
/// content), or an OCI layout directory that root streamed as a tar ([`write_layout_tar`];
/// `layout` says so, for the record). `path` is only for messages: the worker never opens the
/// user's files. Every file of the archive is streamed into the store (files named
/// `blobs/sha256/<hex>` must hash to their name), then the image is read from there.
pub fn import(
    store: &Store,
    policy: &Policy,
    opts: &FetchOptions,
    path: &Path,
    r: &mut dyn Read,
    layout: bool,
    name: Option<&str>,
) -> Result<ImageRecord> {
    let shown = path.display().to_string();
    let mut files: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    let mut ar = tar::Archive::new(r);
    for entry in ar
        .entries()
        .map_err(|e| Error::io("cannot read archive", path, e))?
    {
        let mut entry = entry.map_err(|e| Error::io("cannot read archive", path, e))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let p = entry
            .path()
            .map_err(|e| Error::io("cannot read archive", path, e))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut w = store.blob_writer()?;
        let n =
            io::copy(&mut entry, &mut w).map_err(|e| Error::io("cannot read archive", path, e))?;
        let expected = p
            .strip_prefix("blobs/sha256/")
            .map(|h| Digest::parse(&format!("sha256:{h}")))
            .transpose()?;
        let what = format!("{shown}: {p}");
        let d = w.commit(expected.as_ref().map(|d| (d, what.as_str())))?;
        files.insert(p, (d, n));
    }
    let get = |p: &str| -> Result<Vec<u8>> {
        let (d, n) = files
            .get(p)
            .ok_or_else(|| Error::invalid(&shown, format!("archive has no {p}")))?;
        if *n > MAX_MANIFEST {
            return Err(Error::invalid(&shown, format!("{p} is too large")));
        }
        store.read_blob(d)
    };
    let mut src = InStore;
    if files.contains_key("oci-layout") {
        let index = get("index.json")?;
        let (desc, name) = pick_from_index(&index, name, &shown)?;
        src.blob(store, &desc, "manifest")?;
        let top = store.read_blob(&desc)?;
        let (mut sigs, mut looked) = lookaside_signatures(opts, &name, &desc)?;
        sigs.extend(layout_cosign(store, &mut src, &index, &desc)?);
        looked.push_str(&format!("; the archive's {} tag", cosign_tag(&desc)));
        let source = if layout { "oci-layout" } else { "oci-archive" };
        return ingest(
            store, policy, opts, &name, top, sigs, &looked, &mut src, source,
        );
    }
    if files.contains_key("manifest.json") {
        // docker-archive: build the OCI manifest docker's manifest.json describes.
        let m: serde_json::Value = serde_json::from_slice(&get("manifest.json")?)
            .map_err(|e| Error::invalid(format!("{shown}: manifest.json"), e.to_string()))?;
        let first = m
            .as_array()
            .and_then(|a| a.first())
            .ok_or_else(|| Error::invalid(&shown, "manifest.json lists no image"))?;
        if m.as_array().map(|a| a.len()).unwrap_or(0) > 1 {
            return Err(Error::unsupported(
                &shown,
                "docker-archive with more than one image",
            ));
        }
        let tagged = first
            .get("RepoTags")
            .and_then(|t| t.as_array())
            .and_then(|t| t.first())
            .and_then(|t| t.as_str());
        let name = match (name, tagged) {
            (Some(n), _) => ImageName::parse(n)?,
            (None, Some(t)) => ImageName::parse(t)?,
            (None, None) => {
                return Err(Error::invalid(
                    &shown,
                    "the archive names no image; give --name",
                ))
            }
        };
        let field = |k: &str| -> Result<&(Digest, u64)> {
            let p = first
                .get(k)
                .and_then(|c| c.as_str())
                .ok_or_else(|| Error::invalid(&shown, format!("manifest.json has no {k}")))?;
            files
                .get(p.trim_start_matches("./"))
                .ok_or_else(|| Error::invalid(&shown, format!("archive has no {p}")))
        };
        let (cd, cn) = field("Config")?;
        let mut layers = Vec::new();
        for l in first
            .get("Layers")
            .and_then(|l| l.as_array())
            .ok_or_else(|| Error::invalid(&shown, "manifest.json has no Layers"))?
        {
            let p = l.as_str().unwrap_or_default().trim_start_matches("./");
            let (d, n) = files
                .get(p)
                .ok_or_else(|| Error::invalid(&shown, format!("archive has no layer {p}")))?;
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": d, "size": n,
            }));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
            "layers": layers,
        });
        let top =
            serde_json::to_vec(&manifest).map_err(|e| Error::invalid("manifest", e.to_string()))?;
        let looked = "nowhere (a docker-archive carries no signatures)".to_string();
        return ingest(
            store,
            policy,
            opts,
            &name,
            top,
            Vec::new(),
            &looked,
            &mut src,
            "docker-archive",
        );
    }
    Err(Error::invalid(
        &shown,
        "not an oci-archive (no oci-layout) nor a docker-archive (no manifest.json)",
    ))
}

/// Chooses the image of an OCI index (by `name`'s tag or the only one) and its name.
fn pick_from_index(index: &[u8], name: Option<&str>, shown: &str) -> Result<(Digest, ImageName)> {
    let v: serde_json::Value = serde_json::from_slice(index)
        .map_err(|e| Error::invalid(format!("{shown}: index.json"), e.to_string()))?;
    let entries: Vec<(&str, Option<&str>)> = v
        .get("manifests")
        .and_then(|m| m.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|m| {
                    let d = m.get("digest")?.as_str()?;
                    let r = m
                        .pointer("/annotations/org.opencontainers.image.ref.name")
                        .and_then(|r| r.as_str());
                    Some((d, r))
                })
                .filter(|(_, r)| !r.is_some_and(|r| r.starts_with("sha256-")))
                .collect()
        })
        .unwrap_or_default();
    let looks_full = |r: &str| r.contains('/');
    let chosen = match name {
        Some(n) => {
            let want = ImageName::parse(n)?;
            let tag = want.tag.clone().unwrap_or_else(|| "latest".into());
            let by_ref = entries.iter().find(|(_, r)| {
                r.is_some_and(|r| {
                    r == tag
                        || (looks_full(r)
                            && ImageName::parse(r).map(|x| x.whole()).ok() == Some(want.whole()))
                })
            });
            match (by_ref, entries.len()) {
                (Some(e), _) => *e,
                (None, 1) => entries[0],
                _ => {
                    return Err(Error::invalid(
                        shown,
                        format!("no image tagged {tag:?} among {} images", entries.len()),
                    ))
                }
            }
        }
        None if entries.len() == 1 => entries[0],
        None => {
            return Err(Error::invalid(
                shown,
                format!(
                    "{} images in the index; give --name REF to choose",
                    entries.len()
                ),
            ))
        }
    };
    let digest = Digest::parse(chosen.0)?;
    let image = match (name, chosen.1) {
        (Some(n), _) => ImageName::parse(n)?,
        (None, Some(r)) if looks_full(r) => ImageName::parse(r)?,
        _ => {
            return Err(Error::invalid(
                shown,
                "the image has no full name in the layout; give --name REGISTRY/REPO:TAG",
            ))
        }
    };
    Ok((digest, image))
}

/// Cosign signatures stored in a layout under the `sha256-<hex>.sig` tag (as `cosign save`).
fn layout_cosign(
    store: &Store,
    src: &mut dyn Source,
    index: &[u8],
    top: &Digest,
) -> Result<Vec<StoredSignature>> {
    let v: serde_json::Value =
        serde_json::from_slice(index).map_err(|e| Error::invalid("index.json", e.to_string()))?;
    let tag = cosign_tag(top);
    let Some(d) = v
        .get("manifests")
        .and_then(|m| m.as_array())
        .and_then(|a| {
            a.iter().find(|m| {
                m.pointer("/annotations/org.opencontainers.image.ref.name")
                    .and_then(|r| r.as_str())
                    == Some(tag.as_str())
            })
        })
        .and_then(|m| m.get("digest")?.as_str())
    else {
        return Ok(Vec::new());
    };
    let d = Digest::parse(d)?;
    src.blob(store, &d, "cosign signature manifest")?;
    let m = store.read_blob(&d)?;
    let mut out = Vec::new();
    for (payload_digest, sig) in cosign_layers(&m)? {
        src.blob(store, &payload_digest, "cosign payload")?;
        out.push(StoredSignature::cosign(
            &store.read_blob(&payload_digest)?,
            &sig,
        ));
    }
    Ok(out)
}

/// The (payload digest, signature) pairs of a cosign signature manifest.
fn cosign_layers(manifest: &[u8]) -> Result<Vec<(Digest, String)>> {
    let v: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| Error::invalid("cosign signature manifest", e.to_string()))?;
    let mut out = Vec::new();
    for l in v
        .get("layers")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
    {
        if l.get("mediaType").and_then(|m| m.as_str()) != Some(COSIGN_PAYLOAD_MEDIA_TYPE) {
            continue;
        }
        if l.get("size").and_then(|s| s.as_u64()).unwrap_or(0) > MAX_SIGNATURE {
            continue;
        }
        let (Some(d), Some(s)) = (
            l.get("digest").and_then(|d| d.as_str()),
            l.pointer(&format!(
                "/annotations/{}",
                COSIGN_ANNOTATION.replace('/', "~1")
            ))
            .and_then(|s| s.as_str()),
        ) else {
            continue;
        };
        out.push((Digest::parse(d)?, s.to_string()));
    }
    Ok(out)
}

/// Simple signatures from the lookaside directory; returns them and where they were looked for.
fn lookaside_signatures(
    opts: &FetchOptions,
    name: &ImageName,
    digest: &Digest,
) -> Result<(Vec<StoredSignature>, String)> {
    let Some(base) = &opts.lookaside else {
        return Ok((
            Vec::new(),
            "no lookaside configured ([image] lookaside)".into(),
        ));
    };
    let Some(dir) = base.strip_prefix("file://") else {
        return Err(Error::unsupported(
            format!("lookaside {base}"),
            "only file:// lookaside locations are supported",
        ));
    };
    let sigdir = Path::new(dir).join(format!("{}@sha256={}", name.repository, digest.hex()));
    let mut out = Vec::new();
    for i in 1..=16 {
        let p = sigdir.join(format!("signature-{i}"));
        match File::open(&p) {
            Ok(f) => out.push(StoredSignature::simple(&read_limited(
                f,
                MAX_SIGNATURE,
                &p.display().to_string(),
            )?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(Error::io("cannot read signature", &p, e)),
        }
    }
    Ok((out, format!("lookaside {}", sigdir.display())))
}

/// The common path once the top manifest and the signatures are known.
#[allow(clippy::too_many_arguments)]
fn ingest(
    store: &Store,
    policy: &Policy,
    opts: &FetchOptions,
    name: &ImageName,
    top: Vec<u8>,
    sigs: Vec<StoredSignature>,
    looked: &str,
    src: &mut dyn Source,
    source: &str,
) -> Result<ImageRecord> {
    let top_digest = Digest::of(&top);
    // Judge before fetching any layer.
    let verification = if opts.skip_verify {
        Verification::Skipped
    } else {
        policy.evaluate(name, &top_digest, &sigs, looked)?
    };
    let top_v: serde_json::Value = serde_json::from_slice(&top)
        .map_err(|e| Error::invalid(format!("manifest of {}", name.whole()), e.to_string()))?;
    let (manifest_digest, manifest) = if top_v.get("manifests").is_some() {
        let d = pick_platform(&top_v, &name.whole())?;
        src.blob(store, &d, "platform manifest")?;
        let m = store.read_blob(&d)?;
        (d, m)
    } else {
        (top_digest.clone(), top.clone())
    };
    let m: serde_json::Value = serde_json::from_slice(&manifest)
        .map_err(|e| Error::invalid(format!("manifest of {}", name.whole()), e.to_string()))?;
    if m.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Err(Error::unsupported(
            format!("manifest of {}", name.whole()),
            "only schema version 2 (OCI or Docker v2.2) manifests are supported",
        ));
    }
    let desc = |v: &serde_json::Value| -> Result<(Digest, u64)> {
        let d = v
            .get("digest")
            .and_then(|d| d.as_str())
            .ok_or_else(|| Error::invalid("manifest", "descriptor without a digest"))?;
        Ok((
            Digest::parse(d)?,
            v.get("size").and_then(|s| s.as_u64()).unwrap_or(0),
        ))
    };
    let (config, config_size) = desc(m.get("config").unwrap_or(&serde_json::Value::Null))?;
    let layers: Vec<(Digest, u64)> = m
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or_else(|| Error::invalid("manifest", "no layers"))?
        .iter()
        .map(desc)
        .collect::<Result<_>>()?;
    src.blob(store, &config, "config")?;
    let cfg: serde_json::Value = serde_json::from_slice(&store.read_blob(&config)?)
        .map_err(|e| Error::invalid("image config", e.to_string()))?;
    let diff_ids: Vec<Digest> = cfg
        .pointer("/rootfs/diff_ids")
        .and_then(|d| d.as_array())
        .ok_or_else(|| Error::invalid("image config", "no rootfs.diff_ids"))?
        .iter()
        .map(|d| Digest::parse(d.as_str().unwrap_or_default()))
        .collect::<Result<_>>()?;
    if diff_ids.len() != layers.len() {
        return Err(Error::invalid(
            "image config",
            format!("{} diff_ids for {} layers", diff_ids.len(), layers.len()),
        ));
    }
    let mut size = top.len() as u64 + config_size;
    for (i, (l, n)) in layers.iter().enumerate() {
        src.blob(store, l, &format!("layer {}/{} {l}", i + 1, layers.len()))?;
        size += n;
    }
    let dir = store.unpacked_dir(&manifest_digest);
    if !dir.join(META_FILE).is_file() {
        unpack_image(store, &manifest_digest, &layers, &diff_ids, &dir)?;
    }
    store.put_blob(&top)?;
    store.put_blob(&manifest)?;
    let mut sig_blobs = Vec::new();
    for s in &sigs {
        let bytes =
            serde_json::to_vec(s).map_err(|e| Error::invalid("signature", e.to_string()))?;
        sig_blobs.push(store.put_blob(&bytes)?);
    }
    let rec = ImageRecord {
        name: name.whole(),
        digest: top_digest,
        manifest: manifest_digest,
        config,
        layers: layers.into_iter().map(|(d, _)| d).collect(),
        signatures: sig_blobs,
        verification,
        source: source.to_string(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        size,
    };
    store.put_ref(&rec)?;
    Ok(rec)
}

fn unpack_image(
    store: &Store,
    manifest: &Digest,
    layers: &[(Digest, u64)],
    diff_ids: &[Digest],
    dir: &Path,
) -> Result<()> {
    let tmp =
        store
            .root()
            .join("tmp")
            .join(format!("unpack-{}-{}", manifest.hex(), std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let rootfs = tmp.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(|e| Error::io("cannot create", &rootfs, e))?;
    let result = (|| -> Result<()> {
        let mut u = Unpacker::new(&rootfs)?;
        for ((l, _), want) in layers.iter().zip(diff_ids) {
            let p = store.blob_path(l);
            let f = File::open(&p).map_err(|e| Error::io("cannot open", &p, e))?;
            let reader = unpack::decompressed(f, l.as_str())?;
            let got = u.apply_layer(l.as_str(), reader)?;
            if &got != want {
                return Err(Error::Digest {
                    what: format!("layer {l} (uncompressed, diff_id)"),
                    expected: want.to_string(),
                    actual: got.to_string(),
                });
            }
        }
        u.meta.manifest = Some(manifest.clone());
        u.meta.diff_ids = diff_ids.to_vec();
        u.write_meta(&tmp.join(META_FILE))?;
        fs::rename(&tmp, dir).map_err(|e| Error::io("cannot store", dir, e))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// The manifest of an index for this machine (linux + this architecture).
fn pick_platform(index: &serde_json::Value, what: &str) -> Result<Digest> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let found = index
        .get("manifests")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .find(|m| {
            m.pointer("/platform/os").and_then(|o| o.as_str()) == Some("linux")
                && m.pointer("/platform/architecture").and_then(|a| a.as_str()) == Some(arch)
        })
        .and_then(|m| m.get("digest")?.as_str())
        .ok_or_else(|| Error::unsupported(what, format!("the index has no linux/{arch} image")))?;
    Digest::parse(found)
}

/// Blobs already in the store (archives).
struct InStore;

impl Source for InStore {
    fn blob(&mut self, store: &Store, d: &Digest, what: &str) -> Result<()> {
        if store.has_blob(d) {
            return Ok(());
        }
        Err(Error::invalid(
            what,
            format!("blob {d} is missing from the archive"),
        ))
    }
}

/// Re-judges a stored image against the current policy with the signatures kept with it.
pub fn verify_stored(store: &Store, policy: &Policy, name: &str) -> Result<ImageRecord> {
    let image = ImageName::parse(name)?;
    let rec = store
        .get_ref(&image.whole())?
        .ok_or_else(|| Error::NotFound(image.whole()))?;
    let mut sigs = Vec::new();
    for d in &rec.signatures {
        let s: StoredSignature = serde_json::from_slice(&store.read_blob(d)?)
            .map_err(|e| Error::invalid("stored signature", e.to_string()))?;
        sigs.push(s);
    }
    let looked = format!(
        "the {} signature(s) kept when it was {}",
        sigs.len(),
        if rec.source == "registry" {
            "pulled"
        } else {
            "imported"
        }
    );
    let verification = policy.evaluate(&image, &rec.digest, &sigs, &looked)?;
    let mut rec = rec;
    rec.verification = verification;
    store.put_ref(&rec)?;
    Ok(rec)
}

/// Removes image names and then every blob and tree no name needs.
pub fn remove(store: &Store, names: &[String]) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for n in names {
        if n.starts_with("sha256:") {
            let by_digest: Vec<String> = store
                .list()?
                .into_iter()
                .filter(|r| r.digest.as_str() == n || r.manifest.as_str() == n)
                .map(|r| r.name)
                .collect();
            if by_digest.is_empty() {
                return Err(Error::NotFound(n.clone()));
            }
            for b in by_digest {
                store.remove_ref(&b)?;
                removed.push(b);
            }
            continue;
        }
        let whole = ImageName::parse(n)?.whole();
        if !store.remove_ref(&whole)? {
            return Err(Error::NotFound(whole));
        }
        removed.push(whole);
    }
    store.gc()?;
    Ok(removed)
}
