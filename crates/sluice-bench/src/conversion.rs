//! What the old message formats cost (issue 15): the same load produced and consumed by a
//! current client (record batches, stored and served as sent) and by one that speaks the
//! formats Kafka 4 dropped (librdkafka with `api.version.request=false` and
//! `broker.version.fallback=0.9.0`: Produce v1 and Fetch v1 with magic 0 message sets,
//! converted into batches on produce and back on fetch; a fallback of 0.10 or later makes
//! librdkafka ask for API versions again), in the same run, as broker CPU seconds per GB of
//! message values.

use std::path::Path;

use crate::broker::Broker;
use crate::load::{self, ProduceSpec};
use crate::Run;

const OLD_CLIENT: &[(&str, &str)] = &[
    ("api.version.request", "false"),
    ("broker.version.fallback", "0.9.0"),
];

pub fn run(bin: &Path, data_dir: &Path, quick: bool, run: &mut Run) -> Result<(), String> {
    eprintln!("message format conversion");
    let b = Broker::start(bin, &data_dir.join("conversion"), &[])?;
    let bootstrap = b.bootstrap();
    let bytes = if quick { 64 << 20 } else { 512 << 20 };
    for (name, settings) in [
        ("current client", &[][..]),
        ("old client (magic 0)", OLD_CLIENT),
    ] {
        let topic = format!(
            "conversion-{}",
            if settings.is_empty() { "v2" } else { "v1" }
        );
        load::create_topic(&bootstrap, &topic, 4)?;
        let spec = ProduceSpec {
            size: 1024,
            partitions: 4,
            acks: "1",
            compression: "none",
            bytes,
        };
        let cpu = b.cpu_seconds();
        let produced = load::produce_with_settings(&bootstrap, &topic, spec, settings)?;
        let produce_cpu = b.cpu_seconds() - cpu;
        let gb = (produced.messages as usize * spec.size) as f64 / 1e9;
        let cpu = b.cpu_seconds();
        let consumed = load::consume_backlog_with_settings(
            &bootstrap,
            &topic,
            4,
            produced.messages,
            settings,
        )?;
        let consume_cpu = b.cpu_seconds() - cpu;
        run.row(
            "conversion",
            format!("{name}: produce 1 KB × {}, acks=1", produced.messages),
            format!("{:.1} MB/s", produced.mb_s),
            format!("broker {:.2} CPU-s/GB", produce_cpu / gb),
        );
        run.row(
            "conversion",
            format!("{name}: consume the same"),
            format!("{:.1} MB/s", consumed.mb_s),
            format!("broker {:.2} CPU-s/GB", consume_cpu / gb),
        );
        load::delete_topic(&bootstrap, &topic);
    }
    Ok(())
}
