//! Unit tests of the lifecycle engine.

use super::*;
use crate::backend::{Backend, BackendError, Created};

#[test]
fn exec_merges_flags_over_container_process() {
    let spec = Spec::default();
    let args = ExecArgs {
        args: vec!["ls".into()],
        env: vec![("TERM".into(), "dumb".into()), ("A".into(), "1".into())],
        cwd: Some("/tmp".into()),
        user: Some((1000, Some(100))),
        caps: vec!["net_admin".into()],
        ..Default::default()
    };
    let p = merge_exec_process(&spec, &args).unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &vec!["ls".to_string()]);
    let env = p.env().as_ref().unwrap();
    assert!(env.contains(&"TERM=dumb".to_string()));
    assert!(!env.contains(&"TERM=xterm".to_string()));
    assert_eq!(p.cwd(), Path::new("/tmp"));
    assert_eq!(p.user().uid(), 1000);
    assert_eq!(p.user().gid(), 100);
    let caps = p.capabilities().as_ref().unwrap();
    assert!(caps
        .bounding()
        .as_ref()
        .unwrap()
        .contains(&oci_spec::runtime::Capability::NetAdmin));
}

#[test]
fn process_file_without_user_runs_as_root() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("p.json");
    fs::write(&f, r#"{"args":["true"],"cwd":"/"}"#).unwrap();
    let args = ExecArgs {
        process_file: Some(f),
        ..Default::default()
    };
    let p = merge_exec_process(&Spec::default(), &args).unwrap();
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
}

#[test]
fn exec_without_command_is_an_error() {
    let err = merge_exec_process(&Spec::default(), &ExecArgs::default()).unwrap_err();
    assert!(err.to_string().contains("needs a command"));
}

#[test]
fn bundle_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let e = load_bundle(&tmp.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot open bundle"), "{e}");
    let e = load_bundle(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("config.json not found"), "{e}");
    fs::write(tmp.path().join("config.json"), "{not json").unwrap();
    let e = load_bundle(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("invalid config.json"), "{e}");
}

/// A backend whose create receives a termination signal before it returns.
struct SignalledCreate {
    deleted: std::sync::atomic::AtomicBool,
}

impl Backend for SignalledCreate {
    fn isolation(&self) -> Isolation {
        Isolation::Vm
    }
    fn create_interruptible(&self) -> bool {
        true
    }
    fn create(&self, o: &CreateOpts<'_>) -> Result<Created, BackendError> {
        assert!(
            o.interrupt.is_some(),
            "an interruptible create gets the wake fd"
        );
        // SAFETY: raise(3) of SIGHUP, which the core's guard catches while create runs.
        unsafe { libc::raise(libc::SIGHUP) };
        Ok(Created {
            pid: std::process::id() as i32,
        })
    }
    fn start(&self, _: &ContainerCtx<'_>) -> Result<(), BackendError> {
        unreachable!()
    }
    fn kill(&self, _: &ContainerCtx<'_>, _: i32, _: bool) -> Result<(), BackendError> {
        unreachable!()
    }
    fn pause(&self, _: &ContainerCtx<'_>) -> Result<(), BackendError> {
        unreachable!()
    }
    fn resume(&self, _: &ContainerCtx<'_>) -> Result<(), BackendError> {
        unreachable!()
    }
    fn delete(&self, _: &ContainerCtx<'_>, force: bool) -> Result<(), BackendError> {
        assert!(force);
        self.deleted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
    fn exec(&self, _: &ContainerCtx<'_>, _: &ExecOpts<'_>) -> Result<i32, BackendError> {
        unreachable!()
    }
    fn pids(&self, _: &ContainerCtx<'_>) -> Result<Vec<i32>, BackendError> {
        unreachable!()
    }
    fn stats(&self, _: &ContainerCtx<'_>) -> Result<serde_json::Value, BackendError> {
        unreachable!()
    }
    fn update(&self, _: &ContainerCtx<'_>, _: &LinuxResources) -> Result<(), BackendError> {
        unreachable!()
    }
}

impl BackendRegistry for SignalledCreate {
    fn get(&self, _: Isolation) -> Result<&dyn Backend, Error> {
        Ok(self)
    }
}

#[test]
fn a_create_that_gets_a_termination_signal_is_undone() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    fs::create_dir_all(bundle.join("rootfs")).unwrap();
    let mut spec = Spec::default();
    if let Some(p) = spec.process().clone() {
        let mut p = p;
        p.set_terminal(Some(false));
        spec.set_process(Some(p));
    }
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    // A runner that ignores SIGHUP (nohup) would have the guard leave it alone.
    // SAFETY: signal(2) with a valid signal and disposition, in this test process.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_DFL) };
    let backend = SignalledCreate {
        deleted: false.into(),
    };
    let pid_file = tmp.path().join("pid");
    let root = tmp.path().join("root");
    let rt = Runtime::new(&root, Config::default(), &backend, None, false).unwrap();
    let err = rt
        .create(
            &CreateArgs {
                id: "sig".into(),
                bundle: bundle.clone(),
                pid_file: Some(pid_file.clone()),
                ..Default::default()
            },
            false,
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::Interrupted(libc::SIGHUP)),
        "{err}: not Interrupted(SIGHUP)"
    );
    assert!(err.to_string().contains("interrupted by SIGHUP"), "{err}");
    assert!(backend.deleted.load(std::sync::atomic::Ordering::SeqCst));
    assert!(!root.join("sig").exists(), "the state directory is removed");
    assert!(!pid_file.exists(), "no pid file of a removed container");
}

#[test]
fn pid_file_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("pid");
    write_pid_file(&p, 1234).unwrap();
    assert_eq!(fs::read_to_string(&p).unwrap(), "1234");
}
