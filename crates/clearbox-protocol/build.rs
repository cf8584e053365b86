//! Generates the protobuf messages and ttrpc service bindings into OUT_DIR
//! (pure-Rust parser: no `protoc` needed).
//!
//! The generated files start with inner attributes (`#![allow(..)]`), which `include!`
//! rejects; they are stripped here and re-applied as outer attributes in `src/lib.rs`.

use std::path::Path;
use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/agent.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = std::env::var("OUT_DIR").map_err(std::io::Error::other)?;
    Codegen::new()
        .out_dir(&out_dir)
        .input("proto/agent.proto")
        .include("proto")
        .rust_protobuf()
        .customize(Customize::default())
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()?;
    for name in ["agent.rs", "agent_ttrpc.rs"] {
        let path = Path::new(&out_dir).join(name);
        let text = std::fs::read_to_string(&path)?;
        let stripped: String = text
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                !t.starts_with("#![") && !t.starts_with("//!")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, stripped)?;
    }
    Ok(())
}
