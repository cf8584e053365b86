//! Replays the fuzz inputs kept in `fuzz/regressions/<target>/` (inputs that crashed once, and
//! seeds worth keeping) through the fuzz target bodies: each must return without panicking.

use std::path::PathBuf;

#[test]
fn every_kept_input_passes_its_target() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut replayed = 0;
    for (name, target) in clearbox_fuzz::TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(name)) else {
            continue;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).expect("read input");
            eprintln!("{name}: {}", e.path().display());
            target(&data);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs in {}", dir.display());
}

#[test]
fn targets_survive_trivial_inputs() {
    for (name, target) in clearbox_fuzz::TARGETS {
        for data in [&b""[..], b"\0", b"{}", b"[]", &[0xff; 64]] {
            eprintln!("{name}: {data:?}");
            target(data);
        }
    }
}
