//! The data file under faults and misuse: a damaged file stops the start
//! with a message naming it and what to do; a second server on the same
//! `DATA_DIR` is refused at once; a full disk refuses writes with
//! `unavailable` while nothing acknowledged is lost and reads go on; a
//! backup taken while the server runs is a file another server starts on.

mod common;

use common::tempdir::Dir;
use common::Server;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the server until it exits (it must, within 20 s); its status and
/// what it printed.
fn run_to_exit(env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
    command
        .env("BIND", "127.0.0.1")
        .env("PORT", "0")
        .env("RELAY_PORT", "0")
        .env("ADMIN_PORT", "0")
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), printed)
}

#[test]
fn a_damaged_file_stops_the_start_and_says_what_to_do() {
    let dir = Dir::new();
    let garbage: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("rooms.redb"), garbage).unwrap();
    let data = dir.path().to_str().unwrap();
    let (ok, printed) = run_to_exit(&[("DATA_DIR", data)]);
    assert!(!ok, "{printed}");
    assert!(
        printed.contains(&format!("{data}/rooms.redb")) && printed.contains("move it aside"),
        "{printed}"
    );
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_at_once() {
    let dir = Dir::new();
    let data = dir.path().to_str().unwrap();
    let _first = Server::start(None, &[("DATA_DIR", data)]);
    let started = Instant::now();
    let port = free_port().to_string();
    let (ok, printed) = run_to_exit(&[("DATA_DIR", data), ("PORT", port.as_str())]);
    assert!(!ok, "{printed}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused without waiting for a reload"
    );
    assert!(
        printed.contains("in use by another server process") && printed.contains("port=0"),
        "{printed}"
    );
}

async fn post(server: &Server, text: &str) -> (u16, Value) {
    let body = serde_json::json!({"author": "bot", "text": text}).to_string();
    let (status, answer) =
        common::http_request(server.admin, "POST", "/api/rooms/full/messages", &[], &body).await;
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

/// Every stored event's text in the room, oldest first.
async fn texts(server: &Server) -> Vec<String> {
    let events = common::retained_events(server.admin, "full").await;
    events
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

/// The process may write files of 4 MiB at most (`ulimit -f`, the kernel
/// answering EFBIG as a full disk answers ENOSPC): messages are refused with
/// 503 `unavailable` once the file cannot grow; every acknowledged one is
/// still read; restarted with room, the file holds exactly those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_loses_nothing_acknowledged() {
    let dir = Dir::new();
    let data = dir.path().to_str().unwrap().to_owned();
    let mut limited = Command::new("bash");
    // SIGXFSZ ignored (as a full disk sends none): the write fails instead.
    limited.args([
        "-c",
        concat!(
            "trap '' XFSZ; ulimit -f 4096; exec ",
            env!("CARGO_BIN_EXE_server")
        ),
    ]);
    let server = Server::spawn_configured(limited, None, &[("DATA_DIR", data.as_str())]);
    let text = "x".repeat(1_900);
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let n = acknowledged.len();
        assert!(n < 5_000, "the file never filled up");
        let (status, answer) = post(&server, &format!("{n} {text}")).await;
        if status != 201 {
            break (status, answer);
        }
        acknowledged.push(format!("{n} {text}"));
    };
    assert_eq!(refusal.0, 503, "{}", refusal.1);
    assert_eq!(refusal.1["error"], "unavailable", "{}", refusal.1);
    assert!(
        acknowledged.len() > 100,
        "{} stored first",
        acknowledged.len()
    );
    // Refused again, and reads go on.
    assert_eq!(post(&server, "again").await.0, 503);
    assert_eq!(texts(&server).await, acknowledged);
    drop(server);

    let server = Server::start(None, &[("DATA_DIR", data.as_str())]);
    assert_eq!(
        texts(&server).await,
        acknowledged,
        "exactly the acknowledged"
    );
    assert_eq!(post(&server, "room again").await.0, 201);
}

/// A backup taken during a burst of messages is a file a new server starts
/// on, holding a prefix of the stream: every event up to some offset, each
/// exactly as the running server has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_running_is_a_file_a_server_starts_on() {
    let (live, copy) = (Dir::new(), Dir::new());
    let data = live.path().to_str().unwrap().to_owned();
    let server = Server::start(None, &[("DATA_DIR", data.as_str())]);
    for n in 0..300 {
        assert_eq!(post(&server, &format!("m{n}")).await.0, 201);
    }
    let writer = {
        let admin = server.admin;
        tokio::spawn(async move {
            for n in 300..600 {
                let body = serde_json::json!({"author": "bot", "text": format!("m{n}")});
                let path = "/api/rooms/full/messages";
                common::http_request(admin, "POST", path, &[], &body.to_string()).await;
            }
        })
    };
    let (status, bytes) = common::http_get_bytes(server.admin, "/api/backup").await;
    assert_eq!(status, 200);
    writer.await.unwrap();
    std::fs::write(copy.path().join("rooms.redb"), bytes).unwrap();
    let everything = texts(&server).await;

    let restored = Server::start(None, &[("DATA_DIR", copy.path().to_str().unwrap())]);
    let saved = texts(&restored).await;
    assert!(saved.len() >= 300, "{} events", saved.len());
    assert_eq!(saved[..], everything[..saved.len()], "a prefix, as it was");

    // Without a data file there is nothing to copy.
    let memory = Server::start(None, &[]);
    let (status, body) = common::http_get(memory.admin, "/api/backup").await;
    assert_eq!(status, 400, "{body}");
}
