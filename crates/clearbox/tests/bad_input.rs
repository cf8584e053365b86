//! Bad input: a one-line error, a non-zero exit, and nothing left behind.

mod common;

use common::*;

fn assert_refused(env: &Env, o: &std::process::Output, what: &str) {
    assert!(!o.status.success(), "{what}: exit 0");
    let err = stderr(o);
    assert_eq!(
        err.trim().lines().count(),
        1,
        "{what}: not one line: {err:?}"
    );
    assert!(err.starts_with("clearbox: "), "{what}: {err:?}");
    let _ = env;
}

#[test]
fn bad_ids_bundles_and_signals() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "300"], |_| {});
    let bs = b.to_str().unwrap();
    let long = "a".repeat(1024);
    for (what, args) in [
        ("dotdot id", vec!["create", "-b", bs, "../x"]),
        ("empty id", vec!["create", "-b", bs, ""]),
        ("1 KiB id", vec!["create", "-b", bs, long.as_str()]),
        (
            "missing bundle",
            vec!["create", "-b", "/nonexistent/bundle", "x"],
        ),
        ("unknown container", vec!["state", "nope"]),
        ("kill unknown", vec!["kill", "nope"]),
        ("delete unknown", vec!["delete", "nope"]),
        ("start unknown", vec!["start", "nope"]),
    ] {
        let o = env.run(&args);
        assert_refused(&env, &o, what);
    }
    assert!(env.leftover_ids().is_empty(), "{:?}", env.leftover_ids());

    // Malformed and missing config.json, missing rootfs.
    let bad = env.tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let o = env.run(&["create", "-b", bad.to_str().unwrap(), "m1"]);
    assert_refused(&env, &o, "missing config.json");
    assert!(stderr(&o).contains("config.json"));
    std::fs::write(bad.join("config.json"), "{ not json").unwrap();
    let o = env.run(&["create", "-b", bad.to_str().unwrap(), "m2"]);
    assert_refused(&env, &o, "malformed config.json");
    std::fs::copy(b.join("config.json"), bad.join("config.json")).unwrap();
    let o = env.run(&["create", "-b", bad.to_str().unwrap(), "m3"]);
    assert_refused(&env, &o, "missing rootfs");
    assert!(stderr(&o).contains("rootfs"));
    assert!(env.leftover_ids().is_empty(), "{:?}", env.leftover_ids());
}

#[test]
fn wrong_states_are_refused() {
    for iso in ["namespaces", "fly"] {
        let env = Env::new();
        let b = env.bundle("b", &["sleep", "300"], |_| {});
        let bs = b.to_str().unwrap();
        assert!(env
            .run(&["--isolation", iso, "create", "-b", bs, "w1"])
            .status
            .success());
        let o = env.run(&["--isolation", iso, "create", "-b", bs, "w1"]);
        assert_refused(&env, &o, "duplicate id");
        assert!(stderr(&o).contains("already exists"));
        assert_refused(&env, &env.run(&["pause", "w1"]), "pause created");
        assert_refused(&env, &env.run(&["resume", "w1"]), "resume created");
        assert_refused(&env, &env.run(&["kill", "w1", "SIGFOO"]), "unknown signal");
        assert!(env.run(&["start", "w1"]).status.success(), "{iso}");
        assert_refused(&env, &env.run(&["start", "w1"]), "start running");
        assert_refused(&env, &env.run(&["resume", "w1"]), "resume running");
        assert_refused(&env, &env.run(&["delete", "w1"]), "delete running");
        assert!(env.run(&["kill", "w1", "9"]).status.success());
        for _ in 0..200 {
            if stdout(&env.run(&["state", "w1"])).contains("stopped") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_refused(&env, &env.run(&["exec", "w1", "true"]), "exec stopped");
        assert_refused(&env, &env.run(&["kill", "w1"]), "kill stopped");
        assert_refused(&env, &env.run(&["pause", "w1"]), "pause stopped");
        assert!(env.run(&["delete", "w1"]).status.success());
        assert!(env.leftover_ids().is_empty(), "{iso}");
        assert!(processes_rooted_in(&b).is_empty(), "{iso}");
        assert!(mounts_below(&b).is_empty(), "{iso}");
    }
}

#[test]
fn failing_process_setup_leaves_nothing() {
    for iso in ["namespaces", "fly"] {
        let env = Env::new();
        let b = env.bundle("b", &["no-such-binary"], |_| {});
        let o = env.run(&[
            "--isolation",
            iso,
            "create",
            "-b",
            b.to_str().unwrap(),
            "e1",
        ]);
        assert_refused(&env, &o, "missing executable");
        assert!(
            env.leftover_ids().is_empty(),
            "{iso}: {:?}",
            env.leftover_ids()
        );
        assert!(processes_rooted_in(&b).is_empty(), "{iso}");
        assert!(mounts_below(&b).is_empty(), "{iso}");
        let cg: Vec<_> = std::fs::read_dir("/sys/fs/cgroup/memory")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name() == "e1")
                    .collect()
            })
            .unwrap_or_default();
        assert!(cg.is_empty(), "{iso}: cgroup left");
    }
}
