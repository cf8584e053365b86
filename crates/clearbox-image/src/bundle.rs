//! Root side of `image run`: builds an OCI bundle (rootfs + config.json) from a stored image,
//! re-checking what the unprivileged worker wrote before trusting it.

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Mount, Spec};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::{ImageRecord, Store};
use crate::unpack::{self, META_FILE};

/// An image read back from the store, every digest checked against the record.
pub struct CheckedImage {
    pub record: ImageRecord,
    pub config: ImageConfiguration,
    pub meta: unpack::Meta,
    pub rootfs: PathBuf,
}

/// Reads and checks a stored image: the manifest (and index) hash to the record's digests and
/// name its config and layers, the config hashes to its digest, and the unpacked tree was made
/// from exactly these layers (`diff_ids`).
pub fn check_stored(store: &Store, name: &str) -> Result<CheckedImage> {
    let record = store
        .get_ref(name)?
        .ok_or_else(|| Error::NotFound(name.to_string()))?;
    let top = store.read_blob(&record.digest)?;
    if record.digest != record.manifest {
        let idx: serde_json::Value = serde_json::from_slice(&top)
            .map_err(|e| Error::invalid("stored index", e.to_string()))?;
        let listed = idx
            .get("manifests")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
            .any(|m| m.get("digest").and_then(|d| d.as_str()) == Some(record.manifest.as_str()));
        if !listed {
            return Err(Error::invalid(
                format!("stored image {name}"),
                "its index does not list its manifest",
            ));
        }
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&record.manifest)?)
            .map_err(|e| Error::invalid("stored manifest", e.to_string()))?;
    let config_digest = manifest
        .pointer("/config/digest")
        .and_then(|d| d.as_str())
        .map(Digest::parse)
        .transpose()?;
    let layers: Vec<Digest> = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("digest")?.as_str().map(Digest::parse))
        .collect::<Result<_>>()?;
    if config_digest.as_ref() != Some(&record.config) || layers != record.layers {
        return Err(Error::invalid(
            format!("stored image {name}"),
            "the record does not match its manifest",
        ));
    }
    let config_bytes = store.read_blob(&record.config)?;
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
        .map_err(|e| Error::invalid("image config", e.to_string()))?;
    let dir = store.unpacked_dir(&record.manifest);
    let meta = unpack::load_meta(&dir.join(META_FILE))?;
    let diff_ids: Vec<Digest> = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<_>>()?;
    if meta.manifest.as_ref() != Some(&record.manifest) || meta.diff_ids != diff_ids {
        return Err(Error::invalid(
            format!("unpacked image {}", dir.display()),
            "it was not made from this image's layers",
        ));
    }
    Ok(CheckedImage {
        record,
        config,
        meta,
        rootfs: dir.join("rootfs"),
    })
}

/// How `image run` wants the process.
pub struct RunSpec<'a> {
    pub hostname: &'a str,
    /// Arguments after `--`: replace the image's cmd (the entrypoint stays).
    pub args: &'a [String],
    pub tty: bool,
    pub image: &'a str,
    pub digest: &'a Digest,
}

/// Creates `bundle/rootfs` from the checked image and writes `bundle/config.json`.
pub fn build(img: &CheckedImage, bundle: &Path, run: &RunSpec<'_>) -> Result<Spec> {
    let rootfs = bundle.join("rootfs");
    fs::create_dir(&rootfs).map_err(|e| Error::io("cannot create", &rootfs, e))?;
    unpack::materialize(&img.rootfs, &img.meta, &rootfs)?;
    let spec = spec_for(&img.config, &rootfs, run)?;
    let path = bundle.join("config.json");
    let json =
        serde_json::to_vec_pretty(&spec).map_err(|e| Error::invalid("spec", e.to_string()))?;
    fs::write(&path, json).map_err(|e| Error::io("cannot write", &path, e))?;
    Ok(spec)
}

/// The runtime spec for an image config: runc's defaults plus the image's entrypoint, cmd, env,
/// user, working directory and volumes (tmpfs).
pub fn spec_for(cfg: &ImageConfiguration, rootfs: &Path, run: &RunSpec<'_>) -> Result<Spec> {
    let c = cfg.config().clone().unwrap_or_default();
    let mut args: Vec<String> = c.entrypoint().clone().unwrap_or_default();
    if run.args.is_empty() {
        args.extend(c.cmd().clone().unwrap_or_default());
    } else {
        args.extend(run.args.iter().cloned());
    }
    if args.is_empty() {
        return Err(Error::invalid(
            format!("image {}", run.image),
            "it has no entrypoint or cmd; give a command after --",
        ));
    }
    let mut env: Vec<String> = c.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if run.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    env.push(format!("HOSTNAME={}", run.hostname));
    let cwd = c
        .working_dir()
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(Error::invalid(
            format!("image {}", run.image),
            format!("working directory {cwd:?} is not absolute"),
        ));
    }
    let user = resolve_user(rootfs, c.user().as_deref().unwrap_or(""))?;

    let mut spec = Spec::default();
    spec.set_hostname(Some(run.hostname.to_string()));
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(args));
    p.set_env(Some(env));
    p.set_cwd(PathBuf::from(cwd));
    p.set_terminal(Some(run.tty));
    let mut u = p.user().clone();
    u.set_uid(user.0);
    u.set_gid(user.1);
    u.set_additional_gids(if user.2.is_empty() {
        None
    } else {
        Some(user.2)
    });
    p.set_user(u);
    spec.set_process(Some(p));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let mut vols: Vec<&String> = c.volumes().iter().flatten().collect();
    vols.sort();
    for v in vols {
        if !v.starts_with('/') || v.split('/').any(|c| c == "..") {
            return Err(Error::invalid(
                format!("image {}", run.image),
                format!("volume {v:?} is not an absolute path"),
            ));
        }
        let mut m = Mount::default();
        m.set_destination(PathBuf::from(v));
        m.set_typ(Some("tmpfs".into()));
        m.set_source(Some(PathBuf::from("tmpfs")));
        m.set_options(Some(vec![
            "nosuid".into(),
            "nodev".into(),
            "mode=755".into(),
        ]));
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
    let mut ann = spec.annotations().clone().unwrap_or_default();
    ann.insert(
        "org.opencontainers.image.ref.name".into(),
        run.image.to_string(),
    );
    ann.insert("io.clearbox.image.digest".into(), run.digest.to_string());
    spec.set_annotations(Some(ann));
    Ok(spec)
}

/// Resolves the image's `User` ("", "uid", "uid:gid", "name", "name:group") against the
/// rootfs's /etc/passwd and /etc/group, read in-root (symlinks cannot leave the rootfs).
/// Returns (uid, gid, additional gids).
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>)> {
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd").unwrap_or_default();
    let group = read_in_root(rootfs, "etc/group").unwrap_or_default();
    let bad = |why: String| Error::invalid(format!("image user {user:?}"), why);
    let pw: Option<(String, u32, u32)> = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let (uid, gid) = (f[2].parse().ok()?, f[3].parse().ok()?);
        let hit = match u.parse::<u32>() {
            Ok(n) => uid == n,
            Err(_) => f[0] == u,
        };
        hit.then(|| (f[0].to_string(), uid, gid))
    });
    let uid = match (u.parse::<u32>(), &pw) {
        (Ok(n), _) => n,
        (Err(_), Some((_, uid, _))) => *uid,
        (Err(_), None) => return Err(bad(format!("no user {u:?} in the image's /etc/passwd"))),
    };
    let groups: Vec<(String, u32, Vec<String>)> = group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect();
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|(n, _, _)| n == g)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| bad(format!("no group {g:?} in the image's /etc/group")))?,
        },
        None => pw.as_ref().map(|(_, _, gid)| *gid).unwrap_or(0),
    };
    let mut extra = Vec::new();
    if let (None, Some((name, _, _))) = (g, &pw) {
        for (_, id, members) in &groups {
            if members.iter().any(|m| m == name) && *id != gid {
                extra.push(*id);
            }
        }
    }
    Ok((uid, gid, extra))
}

fn read_in_root(rootfs: &Path, rel: &str) -> Option<String> {
    let dir = nix::fcntl::open(
        rootfs,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let dir = unsafe { OwnedFd::from_raw_fd(dir) };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(dir.as_raw_fd(), rel, how).ok()?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    let mut f = unsafe { fs::File::from_raw_fd(fd) };
    let mut s = String::new();
    f.by_ref().take(1 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_in_the_image() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("etc")).unwrap();
        fs::write(
            tmp.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:1000:1000::/home/web:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            tmp.path().join("etc/group"),
            "root:x:0:\nweb:x:1000:\nwww:x:33:web\n",
        )
        .unwrap();
        assert_eq!(resolve_user(tmp.path(), "").unwrap(), (0, 0, vec![]));
        assert_eq!(
            resolve_user(tmp.path(), "web").unwrap(),
            (1000, 1000, vec![33])
        );
        assert_eq!(
            resolve_user(tmp.path(), "1000:www").unwrap(),
            (1000, 33, vec![])
        );
        assert_eq!(resolve_user(tmp.path(), "4242").unwrap(), (4242, 0, vec![]));
        assert!(resolve_user(tmp.path(), "nobody").is_err());
    }

    #[test]
    fn spec_from_image_config() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
                "config":{"Entrypoint":["/bin/tini","--"],"Cmd":["serve"],"Env":["A=1"],
                          "WorkingDir":"/srv","Volumes":{"/data":{}}}}"#,
        )
        .unwrap();
        let d = Digest::of(b"x");
        let run = RunSpec {
            hostname: "h",
            args: &[],
            tty: false,
            image: "r/a:1",
            digest: &d,
        };
        let s = spec_for(&cfg, tmp.path(), &run).unwrap();
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["/bin/tini", "--", "serve"]);
        assert!(p.env().as_ref().unwrap().contains(&"A=1".to_string()));
        assert_eq!(p.cwd(), Path::new("/srv"));
        assert!(s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.destination() == Path::new("/data")));
        let args = vec!["echo".to_string(), "hi".to_string()];
        let run = RunSpec { args: &args, ..run };
        let s = spec_for(&cfg, tmp.path(), &run).unwrap();
        assert_eq!(
            s.process().as_ref().unwrap().args().as_ref().unwrap(),
            &["/bin/tini", "--", "echo", "hi"]
        );
    }
}
