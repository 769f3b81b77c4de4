//! The replicated map through `ergon call` on three node processes: put, get on another node,
//! compare-and-set that misses and one that hits, delete, and a malformed request refused by the
//! CLI.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{agreed_leader, call, cluster_files, operator, until, NodeProcess};

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

    // ergon cluster status: every node's view, one line each; a stopped node is named unreachable.
    let status = |d: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_ergon")).args(["cluster", "status", "--config"]).arg(d.join("client.toml")).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let settled = until(Duration::from_secs(5), || async {
        let (code, out, _) = status(d);
        let rows: Vec<Vec<String>> = out.lines().skip(1).map(|l| l.split_whitespace().map(str::to_owned).collect()).collect();
        let agreed = rows.len() == 3 && rows.iter().all(|r| r[3] == rows[0][3] && r[3] != "-" && r[4] == r[5] && r[6..] == ["voters", "1,2,3"]);
        (code == Some(0) && agreed).then_some(out)
    })
    .await;
    assert!(settled.is_some(), "three nodes agree on the leader and have applied what they committed: {:?}", status(d));
    assert!(nodes[2].terminate().expect("exits").success());
    let (code, out, err) = status(d);
    assert_eq!(code, Some(0), "two nodes answer");
    assert_eq!(out.lines().count(), 3, "a header and two nodes: {out}");
    assert!(err.contains("    3  ") && err.contains("unreachable"), "{err}");

    for node in &mut nodes[..2] {
        assert!(node.terminate().expect("exits").success(), "{}", node.log());
    }
}
