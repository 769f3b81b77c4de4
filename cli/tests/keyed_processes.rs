//! The replicated map through `ergon call` on three node processes: put, get on another node,
//! compare-and-set that misses and one that hits, delete, and a malformed request refused by the
//! CLI.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{agreed_leader, cluster_files, operator, until, NodeProcess};

fn call(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ergon"))
        .args(["call", "--config"])
        .arg(dir.join("client.toml"))
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_set_read_swapped_and_deleted_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = cluster_files(dir.path(), 3);
    let mut nodes: Vec<NodeProcess> = (1..=3).map(|id| NodeProcess::spawn(dir.path(), id, None)).collect();
    let credentials = operator(dir.path());
    until(Duration::from_secs(20), || agreed_leader(&addresses, &[1, 2, 3], &credentials)).await.expect("a leader");

    let d = dir.path();
    let (ok, out) = call(d, &["put", "colour", "red"]);
    assert!(ok && out.contains("written at revision 1"), "{out}");
    let read = until(Duration::from_secs(5), || async {
        let (ok, out) = call(d, &["--node", "3", "get", "colour", "--stale"]);
        (ok && out.contains("red (written at revision 1; stale read")).then_some(out)
    })
    .await;
    assert!(read.is_some(), "node 3 applies the write");
    let (ok, out) = call(d, &["--node", "2", "get", "colour"]);
    assert!(ok && out.contains("red (written at revision 1; linearizable read"), "{out}");
    let (ok, out) = call(d, &["cas", "colour", "blue", "--revision", "99"]);
    assert!(ok && out.contains("not set") && out.contains("it holds red written at revision 1"), "{out}");
    let (ok, out) = call(d, &["cas", "colour", "blue", "--expect", "red"]);
    assert!(ok && out.contains("written at revision 3"), "{out}");
    let (ok, out) = call(d, &["delete", "colour"]);
    assert!(ok && out.contains("deleted at revision 4"), "{out}");
    let (ok, out) = call(d, &["cas", "colour", "green", "--absent"]);
    assert!(ok && out.contains("written at revision 5"), "{out}");
    let (ok, out) = call(d, &["cas", "colour", "x", "--absent", "--revision", "1"]);
    assert!(!ok && out.contains("cannot be used with"), "clap refuses two expectations: {out}");
    let (ok, out) = call(d, &["put", "", "x"]);
    assert!(!ok && out.contains("InvalidRequest") && out.contains("the key is empty"), "{out}");

    for node in &mut nodes {
        assert!(node.terminate().expect("exits").success(), "{}", node.log());
    }
}
