//! Generates the protobuf messages and ttrpc service bindings into OUT_DIR
//! (pure-Rust parser: no `protoc` needed).
//!
//! The service module holds the sync server (`Agent`, `create_agent`: what the guest agent
//! serves) and a client: with the `client` feature the async one (`ttrpc::r#async::Client`,
//! what `AgentClient` drives), without it the sync one (unused; the agent serves only).
//!
//! The generated files start with inner attributes (`#![allow(..)]`), which `include!`
//! rejects; they are stripped here and re-applied as outer attributes in `src/lib.rs`.

use std::path::Path;
use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/agent.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let async_client = std::env::var_os("CARGO_FEATURE_CLIENT").is_some();
    let out_dir = std::env::var("OUT_DIR").map_err(std::io::Error::other)?;
    Codegen::new()
        .out_dir(&out_dir)
        .input("proto/agent.proto")
        .include("proto")
        .rust_protobuf()
        .customize(Customize {
            async_client,
            ..Customize::default()
        })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()?;
    for name in ["agent.rs", "agent_ttrpc.rs"] {
        let path = Path::new(&out_dir).join(name);
        let text = std::fs::read_to_string(&path)?;
        let stripped: String = text
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                // `async_trait` is imported for async servers only; the server stays sync.
                !t.starts_with("#![")
                    && !t.starts_with("//!")
                    && t != "use async_trait::async_trait;"
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, stripped)?;
    }
    Ok(())
}
