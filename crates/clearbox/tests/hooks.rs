//! OCI hooks that run on the host: createRuntime, prestart, poststart and poststop, each with the
//! container's state on stdin.

mod common;

use common::*;

#[test]
fn host_hooks_run_in_order_with_state_on_stdin() {
    for iso in ["namespaces", "fly"] {
        let env = Env::new();
        let log = env.tmp.path().join("hooks.log");
        let hook = |name: &str| {
            serde_json::json!({
                "path": "/bin/sh",
                "args": ["sh", "-c", format!("read -r state; echo {name} \"$state\" >> {}", log.display())],
            })
        };
        let b = env.bundle("b", &["sleep", "300"], |v| {
            v["hooks"] = serde_json::json!({
                "createRuntime": [hook("createRuntime")],
                "prestart": [hook("prestart")],
                "poststart": [hook("poststart")],
                "poststop": [hook("poststop")],
            });
        });
        let o = env.run(&[
            "--isolation",
            iso,
            "create",
            "-b",
            b.to_str().unwrap(),
            "h1",
        ]);
        assert!(o.status.success(), "{iso}: {}", stderr(&o));
        assert!(env.run(&["start", "h1"]).status.success(), "{iso}");
        let o = env.run(&["delete", "--force", "h1"]);
        assert!(o.status.success(), "{iso}: {}", stderr(&o));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let names: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
        for expected in ["createRuntime", "prestart", "poststart", "poststop"] {
            assert!(
                names.contains(&expected),
                "{iso}: {expected} missing in {names:?}"
            );
        }
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("prestart") < pos("poststart"), "{iso}: {names:?}");
        assert!(pos("poststart") < pos("poststop"), "{iso}: {names:?}");
        assert!(
            text.contains("\"id\":\"h1\""),
            "{iso}: no state on stdin: {text}"
        );
    }
}

/// runc's order (prestart, then createRuntime), annotations in the state, a hook that does not
/// read its stdin (no SIGPIPE for the runtime), and the failure rules: a failing poststart or
/// poststop hook is a warning, a failing prestart hook aborts create and leaves nothing.
#[test]
fn hooks_follow_runc_order_and_failure_rules() {
    for iso in ["namespaces", "fly"] {
        let env = Env::new();
        let log = env.tmp.path().join("hooks.log");
        let hook = |name: &str| {
            serde_json::json!({
                "path": "/bin/sh",
                "args": ["sh", "-c", format!("read -r state; echo {name} \"$state\" >> {}", log.display())],
            })
        };
        let fails = serde_json::json!({"path": "/bin/false", "args": ["false"]});
        // Exits without reading a state far larger than a pipe's buffer.
        let deaf = serde_json::json!({"path": "/bin/true", "args": ["true"]});
        let big = "x".repeat(256 * 1024);
        let b = env.bundle("b", &["sleep", "300"], |v| {
            v["annotations"] = serde_json::json!({"org.example.k": "v", "org.example.big": big});
            v["hooks"] = serde_json::json!({
                "prestart": [deaf.clone(), hook("prestart")],
                "createRuntime": [hook("createRuntime")],
                "poststart": [fails.clone(), hook("poststart")],
                "poststop": [fails.clone(), hook("poststop")],
            });
        });
        let bs = b.to_str().unwrap();
        let o = env.run(&["--isolation", iso, "create", "-b", bs, "h2"]);
        assert!(o.status.success(), "{iso}: {}", stderr(&o));
        let o = env.run(&["start", "h2"]);
        assert!(
            o.status.success(),
            "{iso}: failing poststart: {}",
            stderr(&o)
        );
        let st = env.run(&["state", "h2"]);
        assert!(stdout(&st).contains("running"), "{iso}: {}", stdout(&st));
        let o = env.run(&["delete", "--force", "h2"]);
        assert!(
            o.status.success(),
            "{iso}: failing poststop: {}",
            stderr(&o)
        );
        assert!(env.leftover_ids().is_empty(), "{iso}: state left");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let names: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(
            names,
            ["prestart", "createRuntime", "poststart", "poststop"],
            "{iso}"
        );
        assert!(
            text.contains("org.example.k"),
            "{iso}: no annotations: {text:.300}"
        );

        // A failing prestart hook aborts create and leaves nothing behind.
        let b = env.bundle("c", &["sleep", "300"], |v| {
            v["hooks"] = serde_json::json!({"prestart": [fails.clone()]});
        });
        let o = env.run(&[
            "--isolation",
            iso,
            "create",
            "-b",
            b.to_str().unwrap(),
            "h3",
        ]);
        assert!(!o.status.success(), "{iso}: failing prestart accepted");
        assert!(
            env.leftover_ids().is_empty(),
            "{iso}: state left after failing prestart"
        );
        assert!(
            processes_rooted_in(&b).is_empty(),
            "{iso}: processes left after failing prestart"
        );
    }
}
