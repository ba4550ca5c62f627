//! The `fleet_*` fuzz targets' seeds and regression inputs
//! (`fuzz/seeds/<target>`, `fuzz/regression/<target>`), run through the
//! targets' own checks (`fuzz/fuzz_targets/fleet_checks.rs`, included
//! below, so the two cannot drift) in the ordinary test suite. See
//! `docs/fuzzing.md`.

use std::path::PathBuf;

#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
#[path = "../../../fuzz/fuzz_targets/fleet_checks.rs"]
mod fleet_checks;

/// Every file of the target's seeds (which must exist and be non-empty)
/// and of its regression corpus (when present), sorted by path.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for (dir, required) in [("seeds", true), ("regression", false)] {
        let d = fuzz.join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&d) else {
            assert!(!required, "{} is missing", d.display());
            continue;
        };
        let before = out.len();
        for e in entries {
            let p = e.expect("entry").path();
            if !p.is_file() || p.extension().is_some_and(|x| x == "md") {
                continue;
            }
            out.push((
                p.display().to_string(),
                std::fs::read(&p).expect("readable"),
            ));
        }
        assert!(!required || out.len() > before, "{} is empty", d.display());
    }
    out.sort();
    out
}

/// Runs `check` on every input, naming the input that fails.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let inputs = inputs(target);
    for (name, data) in &inputs {
        if std::panic::catch_unwind(|| check(data)).is_err() {
            panic!("{target}: {name} fails the target's checks");
        }
    }
    inputs.len()
}

#[test]
fn fleet_ids_corpus() {
    replay("fleet_ids", fleet_checks::ids);
}

#[test]
fn fleet_duration_corpus() {
    replay("fleet_duration", fleet_checks::duration);
}

#[test]
fn fleet_requests_corpus() {
    replay("fleet_requests", fleet_checks::requests);
    // The seeds are real bodies: every one decodes.
    for (name, data) in inputs("fleet_requests") {
        if !name.contains("/seeds/") {
            continue;
        }
        let (mode, body) = data.split_first().expect("a mode byte");
        let ok = if mode % 2 == 0 {
            serde_json::from_slice::<trustlaunch_fleet::resources::VirtualMachine>(body).is_ok()
        } else {
            serde_json::from_slice::<trustlaunch_fleet::resources::ScaleSet>(body).is_ok()
        };
        assert!(ok, "seed {name} decodes");
    }
}

#[test]
fn fleet_rolling_corpus() {
    replay("fleet_rolling", fleet_checks::rolling);
}
