//! Failover of the metadata quorum (issue 17): three nodes on loopback with Kafka's default
//! timings (`controller.quorum.election.timeout.ms` 1000, `broker.session.timeout.ms` 9000);
//! the quorum's leader is killed (-9) and the time is taken until the other two agree on a
//! new leader, and until that leader has fenced the dead broker. Each run is a fresh cluster.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::broker::Broker;
use crate::Run;

/// How long one wait (for agreement, for a new leader, for fencing) may take.
const WAIT_MAX: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(10);
const RESPONSE_BYTES_MAX: u64 = 1 << 20;

/// `GET /api/v1/cluster`'s `membership` object from an admin listener.
fn membership(admin: &str) -> Result<Value, String> {
    let mut stream = TcpStream::connect(admin).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /api/v1/cluster HTTP/1.0\r\nHost: {admin}\r\nAccept: application/json\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .take(RESPONSE_BYTES_MAX)
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (_, body) = response.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    let value: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    Ok(value["membership"].clone())
}

/// The leader every node in `admins` names, once they agree and each sees every node in
/// `alive` registered and unfenced.
fn agreed(admins: &[(i64, String)], alive: &[i64]) -> Option<i64> {
    let mut leader = None;
    for (_, admin) in admins.iter().filter(|(id, _)| alive.contains(id)) {
        let m = membership(admin).ok()?;
        let l = m["quorum"]["leader"].as_i64()?;
        if leader.is_some_and(|x| x != l) || !alive.contains(&l) {
            return None;
        }
        leader = Some(l);
        let brokers = m["brokers"].as_array()?;
        let unfenced = |id: i64| {
            brokers.iter().any(|b| {
                b["broker_id"].as_i64() == Some(id) && b["fenced"].as_bool() == Some(false)
            })
        };
        if !alive.iter().all(|&id| unfenced(id)) {
            return None;
        }
    }
    leader
}

fn fenced(admin: &str, broker: i64) -> bool {
    membership(admin).is_ok_and(|m| {
        m["brokers"].as_array().is_some_and(|bs| {
            bs.iter().any(|b| {
                b["broker_id"].as_i64() == Some(broker) && b["fenced"].as_bool() == Some(true)
            })
        })
    })
}

pub(crate) fn wait(what: &str, mut done: impl FnMut() -> bool) -> Result<Duration, String> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > WAIT_MAX {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(POLL);
    }
    Ok(started.elapsed())
}

fn free_port() -> Result<u16, String> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(probe.local_addr().map_err(|e| e.to_string())?.port())
}

/// Started nodes, by id.
pub(crate) type Nodes = Vec<(i64, Broker)>;

/// Three nodes on loopback, voters of one quorum with Kafka's default timings, each with
/// `extra` settings; returns them with their admin listeners.
pub(crate) fn start_cluster(
    bin: &Path,
    dir: &Path,
    extra: &[&str],
) -> Result<(Nodes, Vec<(i64, String)>), String> {
    let ids = [1i64, 2, 3];
    let ports: Vec<u16> = ids.iter().map(|_| free_port()).collect::<Result<_, _>>()?;
    let voters = ids
        .iter()
        .zip(&ports)
        .map(|(id, port)| format!("{id}@127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (id, port) in ids.iter().zip(&ports) {
        let node_dir = dir.join(format!("node{id}"));
        let _ = std::fs::remove_dir_all(&node_dir);
        let mut args = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--set".to_string(),
            format!("controller.quorum.voters={voters}"),
            "--set".to_string(),
            format!("listeners=PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push((*id, Broker::start(bin, &node_dir, &args)?));
    }
    let admins: Vec<(i64, String)> = nodes
        .iter()
        .map(|(id, b)| Ok((*id, b.admin_addr().ok_or("no admin listener")?)))
        .collect::<Result<_, String>>()?;
    wait("three unfenced brokers and one leader", || {
        agreed(&admins, &ids).is_some()
    })?;
    Ok((nodes, admins))
}

/// One run: (time to a new leader, time until the dead broker is fenced), from the kill.
fn failover_once(bin: &Path, dir: &Path) -> Result<(Duration, Duration), String> {
    let ids = [1i64, 2, 3];
    let (mut nodes, admins) = start_cluster(bin, dir, &[])?;
    let mut leader = None;
    wait("three unfenced brokers and one leader", || {
        leader = agreed(&admins, &ids);
        leader.is_some()
    })?;
    let leader = leader.expect("waited for it");
    let alive: Vec<i64> = ids.iter().copied().filter(|&id| id != leader).collect();
    let killed = Instant::now();
    nodes
        .iter_mut()
        .find(|(id, _)| *id == leader)
        .expect("the leader is a node")
        .1
        .kill();
    wait("a new leader", || agreed(&admins, &alive).is_some())?;
    let new_leader = killed.elapsed();
    let survivor = &admins
        .iter()
        .find(|(id, _)| alive.contains(id))
        .expect("two live")
        .1;
    wait("the dead broker fenced", || fenced(survivor, leader))?;
    let fenced_after = killed.elapsed();
    for (_, node) in &mut nodes {
        node.stop()?;
    }
    Ok((new_leader, fenced_after))
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn run(bin: &Path, data_dir: &Path, quick: bool, run: &mut Run) -> Result<(), String> {
    let runs = if quick { 3 } else { 10 };
    eprintln!("metadata quorum failover, {runs} runs of three nodes");
    let dir = data_dir.join("quorum");
    let mut leaders = Vec::new();
    let mut fences = Vec::new();
    for _ in 0..runs {
        let (leader, fence) = failover_once(bin, &dir)?;
        leaders.push(ms(leader));
        fences.push(ms(fence));
    }
    let summary = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!(
            "min {:.0} / median {:.0} / max {:.0} ms",
            v[0],
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    run.row(
        "quorum",
        format!("kill -9 of the quorum leader, 3 voters: new leader agreed ({runs} runs)"),
        summary(leaders),
        "controller.quorum.election.timeout.ms=1000 (openraft waits 1-2 s)".into(),
    );
    run.row(
        "quorum",
        format!("kill -9 of the quorum leader: its broker fenced ({runs} runs)"),
        summary(fences),
        "broker.session.timeout.ms=9000, counted from the new controller's start".into(),
    );
    Ok(())
}
