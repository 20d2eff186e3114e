//! The benchmark keeps working: every scenario runs on a tiny load against
//! the debug server and reports no lost or duplicated message. How fast is
//! the benchmark's business (scripts/bench.sh), not the test suite's.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The server binary of the same build: `cargo test` at the workspace root
/// builds it for the server's own integration tests.
fn server_binary() -> PathBuf {
    let loadgen = PathBuf::from(env!("CARGO_BIN_EXE_loadgen"));
    let server = loadgen.with_file_name("server");
    assert!(
        server.is_file(),
        "no {}: build it first (cargo build -p server)",
        server.display()
    );
    server
}

#[test]
fn every_scenario_runs_on_a_tiny_load() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--quick")
        .arg("--server")
        .arg(server_binary())
        .output()
        .expect("run the load generator");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let names: Vec<&str> = rows.iter().filter_map(|r| r["scenario"].as_str()).collect();
    assert_eq!(names.len(), 26, "one JSON line per scenario: {names:?}");
    for row in &rows {
        assert!(row["deliveries"].as_u64() > Some(0), "{row}");
        assert_eq!(row["lost"], 0, "{row}");
        assert_eq!(row["duplicated"], 0, "{row}");
        // Scenario 12: the backend got every message ("webhook: N of N").
        let note = row["note"].as_str().unwrap_or_default();
        if let Some(webhook) = note.split("webhook: ").nth(1) {
            let counts: Vec<&str> = webhook.split(' ').take(3).collect();
            assert_eq!(counts[0], counts[2], "{row}");
        }
    }
    assert!(stdout.contains("| scenario |"), "the table is printed");
}
