//! What the HTTP load generators (`http.rs`, `fleet_http.rs`) share: a
//! closed and an open loop over a [`Load`], their statistics, and the CPU
//! time and memory of a process read from `/proc`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A bench's result: errors are messages.
pub type Res<T> = Result<T, String>;

/// Where requests go: request `i` of a measurement, answered with its
/// status and body.
pub trait Load: Clone + Send + Sync + 'static {
    /// Sends request `i`.
    fn send(&self, i: usize) -> impl Future<Output = Res<(u16, Bytes)>> + Send;
}

/// One measurement.
#[derive(Default, Clone)]
pub struct Stats {
    pub ok: usize,
    pub errors: usize,
    pub secs: f64,
    /// Response body bytes of the answers counted.
    pub bytes: usize,
    /// Seconds, sorted.
    pub lat: Vec<f64>,
    pub first_error: Option<String>,
    /// CPU seconds the server (all its processes when measured by
    /// process group) and this load generator used during the window.
    pub cpu: Option<(f64, f64)>,
}

impl Stats {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    pub fn pct(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * self.lat.len() as f64).ceil() as usize;
        self.lat[i.clamp(1, self.lat.len()) - 1]
    }

    pub fn max(&self) -> f64 {
        self.lat.last().copied().unwrap_or(f64::NAN)
    }

    /// CPU µs per answer: the server's and the generator's.
    pub fn cpu_us(&self) -> (f64, f64) {
        self.cpu.map_or((f64::NAN, f64::NAN), |(srv, gen)| {
            let n = self.ok.max(1) as f64;
            (srv / n * 1e6, gen / n * 1e6)
        })
    }

    pub fn summary(&self) -> String {
        let (s, g) = self.cpu_us();
        format!(
            "{:.0}/s ok={} err={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms cpu us/req server/loadgen={s:.0}/{g:.0} {:.0} B/answer{}",
            self.per_sec(),
            self.ok,
            self.errors,
            self.pct(50.0) * 1e3,
            self.pct(90.0) * 1e3,
            self.pct(99.0) * 1e3,
            self.max() * 1e3,
            self.bytes as f64 / self.ok.max(1) as f64,
            self.first_error
                .as_ref()
                .map(|e| format!(" first error: {e}"))
                .unwrap_or_default()
        )
    }
}

#[derive(Default)]
struct Acc {
    ok: usize,
    errors: usize,
    bytes: usize,
    lat: Vec<f64>,
    first_error: Option<String>,
}

impl Acc {
    fn add(&mut self, r: &Res<(u16, Bytes)>, lat: f64) {
        match r {
            Ok((200, b)) => {
                self.ok += 1;
                self.bytes += b.len();
                self.lat.push(lat);
            }
            Ok((s, b)) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| {
                    format!(
                        "HTTP {s}: {}",
                        String::from_utf8_lossy(&b[..b.len().min(300)])
                    )
                });
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.clone());
            }
        }
    }

    fn merge(&mut self, o: Acc) {
        self.ok += o.ok;
        self.errors += o.errors;
        self.bytes += o.bytes;
        self.lat.extend(o.lat);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn finish(self, secs: f64) -> Stats {
        let mut lat = self.lat;
        lat.sort_by(f64::total_cmp);
        Stats {
            ok: self.ok,
            errors: self.errors,
            secs,
            bytes: self.bytes,
            lat,
            first_error: self.first_error,
            cpu: None,
        }
    }
}

/// Closed loop: `c` connections, each sending its next request when the
/// previous answer is read, for `d` seconds.
pub async fn closed_loop<L: Load>(t: &L, c: usize, d: f64) -> Stats {
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let end = Instant::now() + Duration::from_secs_f64(d);
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (t, next, stop) = (t.clone(), next.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut acc = Acc::default();
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                let r = t.send(i).await;
                let now = Instant::now();
                if now > end {
                    stop.store(true, Ordering::Relaxed);
                    break; // finished after the window: not counted
                }
                acc.add(&r, (now - t0).as_secs_f64());
            }
            acc
        }));
    }
    let mut all = Acc::default();
    for h in tasks {
        all.merge(h.await.expect("task"));
    }
    all.finish(d)
}

/// Open loop: request `i` is due at `start + i / rate`; it is sent then (or
/// as soon as the generator can) and its latency is counted from that due
/// time, so a slow server cannot slow the schedule down.
pub async fn open_loop<L: Load>(t: &L, rate: f64, d: f64) -> Stats {
    let n = (rate * d).round() as usize;
    let acc = Arc::new(Mutex::new(Acc::default()));
    let start = tokio::time::Instant::now() + Duration::from_millis(5);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let (t, acc) = (t.clone(), acc.clone());
        tasks.push(tokio::spawn(async move {
            let r = t.send(i).await;
            let lat = (tokio::time::Instant::now() - due).as_secs_f64();
            acc.lock().expect("acc").add(&r, lat);
        }));
    }
    for h in tasks {
        h.await.expect("task");
    }
    // completions per second from the first due time to the last answer
    let secs = (tokio::time::Instant::now() - start).as_secs_f64();
    let a = std::mem::take(&mut *acc.lock().expect("acc"));
    a.finish(secs)
}

/// CPU seconds (user + system, with waited-for children) of process
/// `pid`, or with `pgrp` of every process in process group `pid`.
pub fn cpu_secs(pid: u32, pgrp: bool) -> f64 {
    let tck = 100.0; // USER_HZ on Linux
    let one = |stat: &str| -> Option<(u32, f64)> {
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] = state (field 3): pgrp is field 5, utime..cstime 14..17
        let t: f64 = f
            .get(11..15)?
            .iter()
            .filter_map(|v| v.parse::<f64>().ok())
            .sum();
        Some((f.get(2)?.parse().ok()?, t / tck))
    };
    if !pgrp {
        return std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| one(&s))
            .map_or(0.0, |x| x.1);
    }
    let mut sum = 0.0;
    for d in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(st) = std::fs::read_to_string(d.path().join("stat")) {
            if let Some((g, t)) = one(&st) {
                if g == pid {
                    sum += t;
                }
            }
        }
    }
    sum
}

/// Runs `f`, recording the CPU time of the server (`pid`, its process
/// group when `pgrp`) and of this load generator meanwhile.
pub async fn with_cpu(pid: u32, pgrp: bool, f: impl Future<Output = Stats>) -> Stats {
    let me = std::process::id();
    let (s0, g0) = (cpu_secs(pid, pgrp), cpu_secs(me, false));
    let mut st = f.await;
    st.cpu = Some((cpu_secs(pid, pgrp) - s0, cpu_secs(me, false) - g0));
    st
}

/// `VmRSS` and `VmHWM` of `pid`, kB.
pub fn rss(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// The 1, 5 and 15 minute load averages.
#[allow(dead_code)] // fleet_http only
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
