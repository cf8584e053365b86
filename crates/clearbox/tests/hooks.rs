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
