//! Prints the host check (`--json` for JSON), as `clearbox check` will.
fn main() {
    let report = clearbox_vmm::check();
    if std::env::args().any(|a| a == "--json") {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("host-check: {e}"),
        }
    } else {
        println!("{report}");
    }
    std::process::exit(if report.ok { 0 } else { 1 });
}
