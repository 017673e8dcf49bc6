//! Where a scenario's time went inside the broker: its Prometheus histograms (the produce and
//! fetch phases, every fsync) scraped from the admin listener before and after the scenario,
//! and the difference summarised as a mean and a p99 per phase.
//!
//! The scrape is a plain HTTP/1.0 GET on a loopback socket, so the benchmark still imports no
//! Sluice crate and needs no HTTP client; a broker without the admin listener (or not Sluice)
//! simply gets no breakdown.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The histograms summarised, in the order printed: (metric, label prefix shown).
const FAMILIES: [(&str, &str); 4] = [
    ("sluice_produce_phase_duration_seconds", "produce"),
    ("sluice_fetch_phase_duration_seconds", "fetch"),
    (
        "sluice_replica_fetch_phase_duration_seconds",
        "follower fetch",
    ),
    ("sluice_fsync_duration_seconds", "fsync"),
];

/// Phases in the order a request goes through them; others follow alphabetically.
const PHASE_ORDER: [&str; 7] = ["queue", "call", "append", "read", "wakeup", "wait", "fsync"];

/// The most a scrape may return: the exposition of a broker with a few thousand partitions.
const SCRAPE_BYTES_MAX: u64 = 64 << 20;

/// One histogram's cumulative state: bucket upper bounds with cumulative counts, sum, count.
#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

/// Every summarised histogram at one moment, keyed by (family, phase).
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<(String, String), Histogram>);

/// Reads the histograms from a broker's admin listener.
#[derive(Debug, Clone)]
pub struct Scraper {
    admin: String,
}

impl Scraper {
    pub fn new(admin: String) -> Self {
        Self { admin }
    }

    /// The histograms now, or `None` if the broker did not answer (logged once per call).
    pub fn snapshot(&self) -> Option<Snapshot> {
        match scrape(&self.admin) {
            Ok(text) => Some(parse(&text)),
            Err(e) => {
                eprintln!(
                    "  (no phase breakdown: scraping http://{}/metrics: {e})",
                    self.admin
                );
                None
            }
        }
    }
}

fn scrape(admin: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(admin)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // HTTP/1.0: the server closes the connection after the body, with no chunked encoding.
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {admin}\r\nAccept: text/plain\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .take(SCRAPE_BYTES_MAX)
        .read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
    let status = head.split_whitespace().nth(1);
    if !head.starts_with("HTTP/1.") || status != Some("200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(std::io::Error::other(format!("answered {status:?}")));
    }
    Ok(body.to_string())
}

/// The value of `name` in a label list such as `le="0.1",phase="queue"`.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// Picks the summarised histograms out of an OpenMetrics exposition.
fn parse(text: &str) -> Snapshot {
    let mut out = Snapshot::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        for (family, _) in FAMILIES {
            let Some(suffix) = name.strip_prefix(family) else {
                continue;
            };
            let phase = label(labels, "phase").unwrap_or("").to_string();
            let h = out.0.entry((family.to_string(), phase)).or_default();
            match suffix {
                "_sum" => h.sum = value,
                "_count" => h.count = value,
                "_bucket" => {
                    let le = match label(labels, "le") {
                        Some("+Inf") => f64::INFINITY,
                        Some(le) => le.parse().unwrap_or(f64::INFINITY),
                        None => continue,
                    };
                    h.buckets.push((le, value));
                }
                _ => {}
            }
        }
    }
    for h in out.0.values_mut() {
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// What happened between two cumulative states of one histogram.
fn delta(before: Option<&Histogram>, after: &Histogram) -> Histogram {
    let Some(before) = before else {
        return after.clone();
    };
    let buckets = after
        .buckets
        .iter()
        .map(|&(le, n)| {
            let was = before
                .buckets
                .iter()
                .find(|b| b.0 == le)
                .map_or(0.0, |b| b.1);
            (le, n - was)
        })
        .collect();
    Histogram {
        buckets,
        sum: after.sum - before.sum,
        count: after.count - before.count,
    }
}

/// The `q` quantile estimated from cumulative buckets, interpolating linearly inside the
/// bucket it falls in (the buckets double, so this is within a factor of two at worst). A
/// quantile in the open-ended last bucket reports that bucket's lower bound.
fn quantile(h: &Histogram, q: f64) -> Option<f64> {
    if h.count <= 0.0 {
        return None;
    }
    let rank = q * h.count;
    let mut lower = (0.0, 0.0);
    for &(le, cumulative) in &h.buckets {
        if cumulative >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let inside = cumulative - lower.1;
            let fraction = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * fraction);
        }
        lower = (le, cumulative);
    }
    Some(lower.0)
}

/// One phase's figures over a scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    pub family: &'static str,
    pub phase: String,
    pub count: u64,
    pub mean_ms: f64,
    pub p99_ms: Option<f64>,
}

/// The phases observed between `before` and `after` (those with at least one observation).
pub fn breakdown(before: &Snapshot, after: &Snapshot) -> Vec<Phase> {
    let mut phases = Vec::new();
    for (family, short) in FAMILIES {
        let mut here: Vec<Phase> = after
            .0
            .iter()
            .filter(|((f, _), _)| f == family)
            .filter_map(|((f, phase), h)| {
                let d = delta(before.0.get(&(f.clone(), phase.clone())), h);
                (d.count > 0.0).then(|| Phase {
                    family: short,
                    phase: phase.clone(),
                    count: d.count as u64,
                    mean_ms: d.sum / d.count * 1e3,
                    p99_ms: quantile(&d, 0.99).map(|s| s * 1e3),
                })
            })
            .collect();
        let rank = |p: &str| PHASE_ORDER.iter().position(|&o| o == p).unwrap_or(99);
        here.sort_by(|a, b| (rank(&a.phase), &a.phase).cmp(&(rank(&b.phase), &b.phase)));
        phases.extend(here);
    }
    phases
}

/// `produce queue 0.01/0.05, append …; fetch …; fsync 0.4/1.6 ms (mean/p99, n)`.
pub fn describe(phases: &[Phase]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (_, short) in FAMILIES {
        let items: Vec<String> = phases
            .iter()
            .filter(|p| p.family == short)
            .map(|p| {
                let p99 = p.p99_ms.map_or("-".to_string(), |v| format!("{v:.2}"));
                if p.phase.is_empty() {
                    format!("{:.2}/{p99} ({})", p.mean_ms, p.count)
                } else {
                    format!("{} {:.2}/{p99}", p.phase, p.mean_ms)
                }
            })
            .collect();
        if !items.is_empty() {
            parts.push(format!("{short} {}", items.join(", ")));
        }
    }
    if parts.is_empty() {
        return "nothing observed".into();
    }
    format!("{} (ms, mean/p99)", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# TYPE sluice_produce_phase_duration_seconds histogram
sluice_produce_phase_duration_seconds_sum{phase=\"fsync\"} 1.0
sluice_produce_phase_duration_seconds_count{phase=\"fsync\"} 10
sluice_produce_phase_duration_seconds_bucket{le=\"0.001\",phase=\"fsync\"} 5
sluice_produce_phase_duration_seconds_bucket{le=\"0.002\",phase=\"fsync\"} 10
sluice_produce_phase_duration_seconds_bucket{le=\"+Inf\",phase=\"fsync\"} 10
sluice_fsync_duration_seconds_sum 0.5
sluice_fsync_duration_seconds_count 5
sluice_fsync_duration_seconds_bucket{le=\"0.001\"} 5
sluice_fsync_duration_seconds_bucket{le=\"+Inf\"} 5
";

    const AFTER: &str = "\
sluice_produce_phase_duration_seconds_sum{phase=\"fsync\"} 1.2
sluice_produce_phase_duration_seconds_count{phase=\"fsync\"} 110
sluice_produce_phase_duration_seconds_bucket{le=\"0.001\",phase=\"fsync\"} 55
sluice_produce_phase_duration_seconds_bucket{le=\"0.002\",phase=\"fsync\"} 110
sluice_produce_phase_duration_seconds_bucket{le=\"+Inf\",phase=\"fsync\"} 110
sluice_fsync_duration_seconds_sum 0.5
sluice_fsync_duration_seconds_count 5
sluice_fsync_duration_seconds_bucket{le=\"0.001\"} 5
sluice_fsync_duration_seconds_bucket{le=\"+Inf\"} 5
";

    /// A scenario's figures are the difference of two scrapes: phases nothing observed in
    /// between are left out, and the p99 falls inside the bucket holding the 99th rank.
    #[test]
    fn breakdown_is_the_difference_between_scrapes() {
        let phases = breakdown(&parse(BEFORE), &parse(AFTER));
        assert_eq!(phases.len(), 1, "{phases:?}");
        let p = &phases[0];
        assert_eq!(
            (p.family, p.phase.as_str(), p.count),
            ("produce", "fsync", 100)
        );
        assert!((p.mean_ms - 2.0).abs() < 1e-9, "{}", p.mean_ms);
        // 50 in (0, 1 ms], 50 in (1, 2 ms]: rank 99 is 49/50 of the way through the second.
        let p99 = p.p99_ms.expect("observations");
        assert!((p99 - 1.98).abs() < 1e-9, "{p99}");
        assert_eq!(describe(&phases), "produce fsync 2.00/1.98 (ms, mean/p99)");
    }

    /// A quantile in the open-ended bucket reports that bucket's lower bound, not infinity.
    #[test]
    fn quantile_in_the_last_bucket_is_its_lower_bound() {
        let h = Histogram {
            buckets: vec![(0.001, 1.0), (f64::INFINITY, 100.0)],
            sum: 0.0,
            count: 100.0,
        };
        assert_eq!(quantile(&h, 0.99), Some(0.001));
    }
}
