//! In-process throughput of parse + replay (all banks) over the whole real
//! corpus in `../shared/testdata/eventlogs`. Results: docs/benchmarks.md.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use trustlaunch_eventlog::{check_digests, replay, BootEvidence, EventLog};

fn corpus() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/eventlogs");
    let mut logs = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the shared test data is required)", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name == "README.md" || name == "expected.json" {
            continue;
        }
        let bytes = std::fs::read(&path).expect("readable");
        if name.ends_with(".json") {
            let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
            let raw = doc["Log"]["Raw"].as_str().expect("Log.Raw");
            logs.push(
                base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .expect("base64"),
            );
        } else {
            logs.push(bytes);
        }
    }
    logs
}

fn bench(c: &mut Criterion) {
    let logs = corpus();
    let bytes: usize = logs.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("corpus");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            for log in &logs {
                black_box(EventLog::parse(black_box(log)).expect("parses"));
            }
        })
    });
    g.bench_function("parse+replay", |b| {
        b.iter(|| {
            for log in &logs {
                let parsed = EventLog::parse(black_box(log)).expect("parses");
                black_box(replay(&parsed));
            }
        })
    });
    g.bench_function("parse+replay+digest-check+evidence", |b| {
        b.iter(|| {
            for log in &logs {
                let parsed = EventLog::parse(black_box(log)).expect("parses");
                black_box(replay(&parsed));
                black_box(check_digests(&parsed));
                black_box(BootEvidence::extract(&parsed));
            }
        })
    });
    g.finish();
    // The same work counted in logs per second.
    let mut g = c.benchmark_group("corpus-logs");
    g.throughput(Throughput::Elements(logs.len() as u64));
    g.bench_function("parse+replay", |b| {
        b.iter(|| {
            for log in &logs {
                let parsed = EventLog::parse(black_box(log)).expect("parses");
                black_box(replay(&parsed));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
