//! `clearbox image pull|import|list|inspect|rm|run`.
//!
//! Everything that touches untrusted bytes (registry, archive, signatures, layers) runs in the
//! fetch worker (`clearbox __image-worker`, see `clearbox_image::worker`) as the unprivileged
//! `[image] user`. Root only reads the store back, checking digests, to build a bundle, and runs
//! the container through the same core path as `clearbox run`.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use clearbox_core::config::ImageDefaults;
use clearbox_core::runtime::CreateArgs;
use clearbox_core::Config;
use clearbox_image::bundle::{self, RunSpec};
use clearbox_image::fetch::FetchOptions;
use clearbox_image::policy::{self, ImageName, PolicyFiles};
use clearbox_image::worker::{self, Op, Request, Response};
use clearbox_image::{store, ImageRecord, Store, Verification};

use crate::cli::{GlobalOpts, Image, ImageCommand, ImageRun};

/// The default unprivileged fetch user (created by scripts/install-deps.sh).
pub const DEFAULT_FETCH_USER: &str = "clearbox-fetch";
const DEFAULT_BUNDLES: &str = "/var/lib/clearbox/bundles";

/// `[image]` settings resolved.
pub(crate) struct ImageEnv {
    pub store: Store,
    pub bundles: PathBuf,
    pub policy: PathBuf,
    pub trust_dir: PathBuf,
    user: String,
    fetch: FetchOptions,
}

impl ImageEnv {
    pub fn new(c: &ImageDefaults) -> Self {
        Self {
            store: Store::new(
                c.store
                    .clone()
                    .unwrap_or_else(|| store::DEFAULT_ROOT.into()),
            ),
            bundles: c.bundles.clone().unwrap_or_else(|| DEFAULT_BUNDLES.into()),
            policy: c
                .policy
                .clone()
                .unwrap_or_else(|| policy::DEFAULT_PATH.into()),
            trust_dir: c
                .trust_dir
                .clone()
                .unwrap_or_else(|| clearbox_image::trust::DEFAULT_TRUST_DIR.into()),
            user: c.user.clone().unwrap_or_else(|| DEFAULT_FETCH_USER.into()),
            fetch: FetchOptions {
                insecure_registries: c.insecure_registries.clone(),
                lookaside: c.lookaside.clone(),
                skip_verify: false,
            },
        }
    }

    pub fn load() -> Result<Self> {
        Ok(Self::new(&Config::load_default()?.image))
    }

    fn fetch_user(&self) -> Result<(u32, u32)> {
        let u = nix::unistd::User::from_name(&self.user)
            .with_context(|| format!("cannot look up the fetch user {:?}", self.user))?
            .ok_or_else(|| {
                anyhow!(
                    "the fetch user {:?} does not exist: create it (scripts/install-deps.sh does: useradd --system clearbox-fetch) or set [image] user in config.toml",
                    self.user
                )
            })?;
        if u.uid.is_root() {
            bail!(
                "the fetch user {:?} is root; it must be an unprivileged user",
                self.user
            );
        }
        Ok((u.uid.as_raw(), u.gid.as_raw()))
    }

    /// Runs one operation in the unprivileged worker; `feed` is streamed to it.
    fn worker(
        &self,
        op: Op,
        skip_verify: bool,
        feed: Option<Feed>,
    ) -> Result<(Vec<ImageRecord>, Vec<String>)> {
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "clearbox image must run as root (it drops to the fetch user {:?} itself)",
                self.user
            );
        }
        let (uid, gid) = self.fetch_user()?;
        self.store.prepare(uid, gid)?;
        let req = Request {
            op,
            store: self.store.root().to_path_buf(),
            uid,
            gid,
            policy: PolicyFiles::read(&self.policy)?,
            fetch: FetchOptions {
                skip_verify,
                ..self.fetch.clone()
            },
        };
        let line = serde_json::to_string(&req)?;
        // This very binary (its sealed view when sealed: see clearbox_core::exe_seal).
        let exe = "/proc/self/exe";
        // A worker that stops reading (an early error) must not kill us with SIGPIPE.
        let _pipe = IgnoreSigpipe::new();
        let mut child = Command::new(exe)
            .arg(worker::SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the fetch worker")?;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("worker stdin"))?;
        let feeder = std::thread::spawn(move || -> std::io::Result<()> {
            stdin.write_all(line.as_bytes())?;
            stdin.write_all(b"\n")?;
            match feed {
                Some(Feed::Archive(mut f)) => {
                    std::io::copy(&mut f, &mut stdin)?;
                }
                Some(Feed::Layout(dir)) => {
                    clearbox_image::fetch::write_layout_tar(&dir, &mut stdin)
                        .map_err(std::io::Error::other)?;
                }
                None => {}
            }
            Ok(())
        });
        let mut out = String::new();
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("worker stdout"))?
            .read_to_string(&mut out)
            .context("cannot read the fetch worker's answer")?;
        let status = child.wait().context("waiting for the fetch worker")?;
        let _ = feeder.join();
        let resp: Response = serde_json::from_str(out.trim())
            .map_err(|_| anyhow!("the fetch worker failed ({status}) without an answer"))?;
        match resp {
            Response::Ok { records, removed } => Ok((records, removed)),
            Response::Err { message, .. } => Err(anyhow!(message)),
        }
    }
}

/// What root reads for the worker: an archive it opened, or a layout directory it streams as a
/// tar — the worker never opens the user's files (they may be unreadable to the fetch user).
enum Feed {
    Archive(fs::File),
    Layout(PathBuf),
}

/// SIGPIPE ignored while it lives (restored to the default after).
struct IgnoreSigpipe;

impl IgnoreSigpipe {
    fn new() -> Self {
        // SAFETY: SIG_IGN is a valid disposition; only this thread changes SIGPIPE's.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        Self
    }
}

impl Drop for IgnoreSigpipe {
    fn drop(&mut self) {
        // SAFETY: as above; main() set SIG_DFL, which this restores.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
}

fn warn_insecure(what: &str) {
    eprintln!("clearbox: WARNING: --insecure-skip-verify: the signature of {what} is NOT verified");
}

fn describe(v: &Verification) -> String {
    match v {
        Verification::Verified { requirement, key } => format!("verified ({key}; {requirement})"),
        Verification::AcceptAnything { scope } => {
            format!("accepted unsigned (insecureAcceptAnything in {scope})")
        }
        Verification::Skipped => "NOT verified (--insecure-skip-verify)".into(),
    }
}

pub fn run(g: &GlobalOpts, a: Image) -> Result<u8> {
    let env = ImageEnv::load()?;
    match a.command {
        ImageCommand::Pull(p) => {
            if p.insecure_skip_verify {
                warn_insecure(&p.reference);
            }
            let (recs, _) = env.worker(
                Op::Pull {
                    reference: p.reference,
                },
                p.insecure_skip_verify,
                None,
            )?;
            print_pulled(&recs);
            Ok(0)
        }
        ImageCommand::Import(i) => {
            if i.insecure_skip_verify {
                warn_insecure(&i.path.display().to_string());
            }
            let meta = fs::metadata(&i.path)
                .with_context(|| format!("cannot import {}", i.path.display()))?;
            let layout = meta.is_dir();
            let feed = if layout {
                Feed::Layout(i.path.clone())
            } else {
                Feed::Archive(
                    fs::File::open(&i.path)
                        .with_context(|| format!("cannot open {}", i.path.display()))?,
                )
            };
            let (recs, _) = env.worker(
                Op::Import {
                    path: i.path.clone(),
                    layout,
                    name: i.name,
                },
                i.insecure_skip_verify,
                Some(feed),
            )?;
            print_pulled(&recs);
            Ok(0)
        }
        ImageCommand::List(l) => {
            let recs = env.store.list()?;
            if l.format == "json" {
                println!("{}", serde_json::to_string_pretty(&recs)?);
                return Ok(0);
            }
            println!(
                "{:<48} {:<19} {:>9}  {:<22} VERIFIED",
                "NAME", "DIGEST", "SIZE", "CREATED"
            );
            for r in recs {
                let v = match &r.verification {
                    Verification::Verified { key, .. } => key.clone(),
                    Verification::AcceptAnything { .. } => "accept-anything".into(),
                    Verification::Skipped => "NO (insecure)".into(),
                };
                println!(
                    "{:<48} {:<19} {:>9}  {:<22} {v}",
                    r.name,
                    &r.digest.as_str()[..19],
                    human(r.size),
                    r.created
                );
            }
            Ok(0)
        }
        ImageCommand::Inspect(i) => {
            let name = ImageName::parse(&i.reference)?.whole();
            let img = bundle::check_stored(&env.store, &name)?;
            let out = serde_json::json!({
                "record": img.record,
                "config": img.config,
                "entries": img.meta.entries.len(),
                "rootfs": img.rootfs,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        ImageCommand::Rm(r) => {
            let (_, removed) = env.worker(
                Op::Remove {
                    names: r.references,
                },
                true,
                None,
            )?;
            for n in removed {
                println!("{n}");
            }
            Ok(0)
        }
        ImageCommand::Run(r) => run_image(g, &env, r),
    }
}

fn print_pulled(recs: &[ImageRecord]) {
    for r in recs {
        note(r);
        println!("{}", r.digest);
    }
}

/// How an image was judged, on stderr (the journal, under systemd).
fn note(r: &ImageRecord) {
    eprintln!(
        "clearbox: {} {}: {}",
        r.name,
        r.digest,
        describe(&r.verification)
    );
}

fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1}MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1}KiB", n as f64 / 1024.0)
    }
}

fn random_id() -> Result<String> {
    let mut b = [0u8; 6];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom")?;
    Ok(format!(
        "img-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

/// `image run`: verify (or pull), build the bundle as root from the checked store, then the
/// same create/start/wait/delete as `clearbox run`.
fn run_image(g: &GlobalOpts, env: &ImageEnv, r: ImageRun) -> Result<u8> {
    let name = ImageName::parse(&r.reference)?.whole();
    if r.insecure_skip_verify {
        warn_insecure(&name);
    }
    if r.tty && !nix::unistd::isatty(0).unwrap_or(false) {
        bail!("--tty needs a terminal on stdin");
    }
    let rt = super::runtime(g)?;
    let id = match &r.name {
        Some(n) => n.clone(),
        None => random_id()?,
    };
    clearbox_core::id::validate(&id)?;
    // Pull when absent; otherwise judge the stored signatures against today's policy.
    let rec = match env.store.get_ref(&name)? {
        None => {
            env.worker(
                Op::Pull {
                    reference: name.clone(),
                },
                r.insecure_skip_verify,
                None,
            )?
            .0
        }
        Some(_) if r.insecure_skip_verify => Vec::new(),
        Some(_) => {
            env.worker(Op::Verify { name: name.clone() }, false, None)?
                .0
        }
    };
    rec.iter().for_each(note);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&env.bundles)
        .with_context(|| format!("cannot create {}", env.bundles.display()))?;
    fs::set_permissions(&env.bundles, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod {}", env.bundles.display()))?;
    let bundle_dir = env.bundles.join(&id);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&bundle_dir)
        .with_context(|| format!("cannot create the bundle {}", bundle_dir.display()))?;
    let built = (|| -> Result<()> {
        let _lock = env.store.lock_shared()?;
        let img = bundle::check_stored(&env.store, &name)?;
        if img.record.verification == Verification::Skipped && !r.insecure_skip_verify {
            bail!("image {name} was stored without verification; run it with --insecure-skip-verify or pull it again");
        }
        bundle::build(
            &img,
            &bundle_dir,
            &RunSpec {
                hostname: &id,
                args: &r.args,
                tty: r.tty,
                image: &name,
                digest: &img.record.digest,
            },
        )?;
        Ok(())
    })();
    if let Err(e) = built {
        remove_bundle(&bundle_dir);
        return Err(e);
    }
    let console = super::run::foreground_console(false, false, &bundle_dir);
    let code = console.and_then(|console| {
        let create = CreateArgs {
            id,
            bundle: bundle_dir.clone(),
            console_socket: console.as_ref().map(|c| c.path().to_path_buf()),
            ..Default::default()
        };
        super::run::create_start_wait(&rt, &create, console, false, true, false)
    });
    if r.keep {
        eprintln!("clearbox: bundle kept in {}", bundle_dir.display());
    } else {
        remove_bundle(&bundle_dir);
    }
    code
}

/// Removes a bundle unless something is still mounted inside it (then it says so).
fn remove_bundle(dir: &Path) {
    let mounted = fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines().any(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|mp| Path::new(mp).starts_with(dir))
            })
        })
        .unwrap_or(true);
    if mounted {
        eprintln!(
            "clearbox: bundle {} still has mounts; left in place",
            dir.display()
        );
        return;
    }
    if let Err(e) = fs::remove_dir_all(dir) {
        eprintln!("clearbox: cannot remove the bundle {}: {e}", dir.display());
    }
}
