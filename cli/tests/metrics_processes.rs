//! `/metrics` of real node processes: three `ergon node`s with `[metrics] listen`, scraped over
//! HTTP and read with an OpenMetrics parser, agree on their leader and count the callers'
//! requests.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{agreed_leader, free_port, operator, until, write, NodeProcess};
use openmetrics_parser::{MetricNumber, OpenMetricsValue};

fn scrape(address: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: ergon\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

fn gauge(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let values: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    let sample = parsed.families.get(family)?.get_sample_by_label_values(&values)?.clone();
    let number = match sample.value {
        OpenMetricsValue::Gauge(n) => n,
        OpenMetricsValue::Counter(c) => c.value,
        _ => return None,
    };
    Some(match number {
        MetricNumber::Float(x) => x,
        MetricNumber::Int(i) => i as f64,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_processes_serve_metrics_that_agree_on_the_leader_and_count_requests() {
    let dir = tempfile::tempdir().unwrap();
    let scrapes: Vec<SocketAddr> = (1..=3).map(|_| free_port("127.0.0.1")).collect();
    let addresses = common::cluster_files(dir.path(), 3);
    for (id, scrape) in (1..=3).zip(&scrapes) {
        let path = dir.path().join(format!("n{id}.toml"));
        let config = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{config}\n[metrics]\nlisten = \"{scrape}\"\n")).unwrap();
    }
    let mut nodes: Vec<NodeProcess> = (1..=3).map(|id| NodeProcess::spawn(dir.path(), id, None)).collect();
    let credentials = operator(dir.path());
    let leader = until(Duration::from_secs(20), || agreed_leader(&addresses, &[1, 2, 3], &credentials)).await.expect("a leader");
    for i in 0..5u8 {
        write(&addresses, &[1, 2, 3], &credentials, &[i]).await.expect("acknowledged");
    }

    for (id, scrape) in (1..=3u64).zip(&scrapes) {
        let node = id.to_string();
        let text = until(Duration::from_secs(10), || async {
            let text = scrape_blocking(*scrape).await?;
            // Heartbeats update the gauges; wait until this node has applied the five writes.
            (gauge(&text, "ergon_raft_applied_index", &[&node])? >= 5.0).then_some(text)
        })
        .await
        .unwrap_or_else(|| panic!("node {id} serves its metrics: {}", nodes[id as usize - 1].log()));
        for peer in (1..=3u64).filter(|p| *p != id) {
            assert!(gauge(&text, "ergon_phi", &[&node, &peer.to_string()]).is_some(), "node {id} watches {peer}");
        }
    }
    // Every node's leader gauge names the leader the nodes agree on. A loaded machine may
    // elect another one meanwhile (a follower's election timeout passes), so the three are read
    // again until they settle, and the agreement is what is checked.
    let settled = until(Duration::from_secs(20), || async {
        let now = agreed_leader(&addresses, &[1, 2, 3], &credentials).await?;
        for (id, scrape) in (1..=3u64).zip(&scrapes) {
            let text = scrape_blocking(*scrape).await?;
            (gauge(&text, "ergon_raft_leader", &[&id.to_string()])? == now as f64).then_some(())?;
        }
        Some(now)
    })
    .await;
    let leader = settled.unwrap_or_else(|| panic!("the nodes' leader gauges agree with the cluster (first leader {leader})"));
    // The leader's replicator admitted the writes that reached it (some came through followers).
    let text = scrape_blocking(scrapes[leader as usize - 1]).await.unwrap();
    let actor = format!("state-replicator/{leader}");
    let allowed: f64 = (1..=3u64)
        .filter_map(|id| {
            let text = scrape(scrapes[id as usize - 1])?;
            gauge(&text, "ergon_requests", &[&format!("state-replicator/{id}"), "replicate", "allowed"])
        })
        .sum();
    assert_eq!(allowed, 5.0, "every write was admitted once, by the node it was sent to");
    assert!(gauge(&text, "ergon_budget_capacity_joules", &[&actor]).is_some_and(|j| j > 0.0));

    for node in &mut nodes {
        assert!(node.terminate().expect("exits").success(), "{}", node.log());
    }
}

async fn scrape_blocking(address: SocketAddr) -> Option<String> {
    tokio::task::spawn_blocking(move || scrape(address)).await.ok()?
}
