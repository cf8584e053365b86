//! The runc-compatible lifecycle, driven through the real binary, for both host isolations.
//! Needs root (as runc does).

mod common;

use common::*;

const ISOLATIONS: [&str; 2] = ["namespaces", "fly"];

#[test]
fn run_passes_output_and_exit_code() {
    for iso in ISOLATIONS {
        let env = Env::new();
        let b = env.bundle(
            "b",
            &["sh", "-c", "echo out-$0; echo err >&2; exit 42"],
            |_| {},
        );
        let o = env.run(&[
            "--isolation",
            iso,
            "run",
            "--bundle",
            b.to_str().unwrap(),
            "r1",
        ]);
        assert_eq!(o.status.code(), Some(42), "{iso}: {}", stderr(&o));
        assert!(stdout(&o).contains("out-sh"), "{iso}: {}", stdout(&o));
        assert!(stderr(&o).contains("err"), "{iso}");
        assert!(env.leftover_ids().is_empty(), "{iso}: run left state");
    }
}

#[test]
fn run_reports_death_by_signal_as_128_plus_n() {
    for iso in ISOLATIONS {
        let env = Env::new();
        let b = env.bundle("b", &["sleep", "300"], |_| {});
        let mut run = env
            .cb()
            .args(["--isolation", iso, "run", "-b", b.to_str().unwrap(), "sig"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut running = false;
        for _ in 0..500 {
            if stdout(&env.run(&["state", "sig"])).contains("running") {
                running = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(running, "{iso}: never running");
        assert!(env.run(&["kill", "sig", "KILL"]).status.success(), "{iso}");
        let status = run.wait().unwrap();
        assert_eq!(status.code(), Some(137), "{iso}");
        assert!(env.leftover_ids().is_empty(), "{iso}: run left state");
    }
}

#[test]
fn create_start_state_exec_kill_delete() {
    for iso in ISOLATIONS {
        let env = Env::new();
        let b = env.bundle("b", &["sleep", "300"], |_| {});
        let pidfile = env.tmp.path().join("init.pid");
        let o = env.run(&[
            "--isolation",
            iso,
            "create",
            "--bundle",
            b.to_str().unwrap(),
            "--pid-file",
            pidfile.to_str().unwrap(),
            "c1",
        ]);
        assert!(o.status.success(), "{iso} create: {}", stderr(&o));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let state: serde_json::Value =
            serde_json::from_slice(&env.run(&["state", "c1"]).stdout).unwrap();
        assert_eq!(state["status"], "created", "{iso}");
        assert_eq!(state["pid"], pid, "{iso}");
        assert_eq!(state["id"], "c1");

        assert!(env.run(&["start", "c1"]).status.success(), "{iso}");
        let state: serde_json::Value =
            serde_json::from_slice(&env.run(&["state", "c1"]).stdout).unwrap();
        assert_eq!(state["status"], "running", "{iso}");

        let o = env.run(&["exec", "c1", "sh", "-c", "echo exec-ok; exit 3"]);
        assert_eq!(o.status.code(), Some(3), "{iso}: {}", stderr(&o));
        assert!(stdout(&o).contains("exec-ok"));

        let o = env.run(&["ps", "--format", "json", "c1"]);
        let pids: Vec<i32> = serde_json::from_slice(&o.stdout).unwrap();
        assert!(pids.contains(&pid), "{iso}: {pids:?} lacks {pid}");

        let o = env.run(&["list", "-q"]);
        assert_eq!(stdout(&o).trim(), "c1");

        assert!(env.run(&["pause", "c1"]).status.success(), "{iso}");
        let state: serde_json::Value =
            serde_json::from_slice(&env.run(&["state", "c1"]).stdout).unwrap();
        assert_eq!(state["status"], "paused", "{iso}");
        assert!(env.run(&["resume", "c1"]).status.success(), "{iso}");

        let o = env.run(&["delete", "c1"]);
        assert!(
            !o.status.success(),
            "{iso}: deleting a running container must fail"
        );
        assert!(env.run(&["kill", "c1", "KILL"]).status.success(), "{iso}");
        let mut stopped = false;
        for _ in 0..200 {
            let state: serde_json::Value =
                serde_json::from_slice(&env.run(&["state", "c1"]).stdout).unwrap();
            if state["status"] == "stopped" {
                stopped = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(stopped, "{iso}: container did not stop after SIGKILL");
        let o = env.run(&["delete", "c1"]);
        assert!(o.status.success(), "{iso}: {}", stderr(&o));
        assert!(env.leftover_ids().is_empty(), "{iso}");
        assert!(processes_rooted_in(&b).is_empty(), "{iso}");
        assert!(mounts_below(&b).is_empty(), "{iso}");
    }
}

#[test]
fn delete_force_kills_a_running_container() {
    for iso in ISOLATIONS {
        let env = Env::new();
        let b = env.bundle("b", &["sleep", "300"], |_| {});
        let o = env.run(&[
            "--isolation",
            iso,
            "run",
            "-d",
            "-b",
            b.to_str().unwrap(),
            "f1",
        ]);
        assert!(o.status.success(), "{iso}: {}", stderr(&o));
        let o = env.run(&["delete", "--force", "f1"]);
        assert!(o.status.success(), "{iso}: {}", stderr(&o));
        assert!(env.leftover_ids().is_empty(), "{iso}");
        assert!(processes_rooted_in(&b).is_empty(), "{iso}");
        // runc semantics: forcing the deletion of a missing container succeeds.
        assert!(env.run(&["delete", "--force", "f1"]).status.success());
    }
}

#[test]
fn isolation_annotation_wins_over_flag() {
    let env = Env::new();
    let b = env.bundle("b", &["sleep", "300"], |v| {
        v["annotations"] = serde_json::json!({"io.clearbox.isolation": "fly"});
    });
    let o = env.run(&[
        "--isolation",
        "namespaces",
        "create",
        "-b",
        b.to_str().unwrap(),
        "a1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let raw = std::fs::read_to_string(env.root.join("a1/state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["isolation"], "fly");
    assert!(env.run(&["delete", "--force", "a1"]).status.success());
}
