//! What a benchmark measured: latency histograms per operation kind and error counts,
//! merged across connections, and shown as a table or as one JSON line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringkv_core::proto::ErrorCode;
use serde_json::json;

/// The error key for requests lost with their connection (no answer came).
pub const CONNECTION_ERROR: &str = "connection";

/// Latencies are tracked from 1 µs to one hour, with 3 significant digits.
const MAX_LATENCY_US: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// The two kinds of operation the load mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A `getreq`.
    Get,
    /// A `putreq`.
    Put,
}

/// Counts and latencies of a run.
#[derive(Clone, Debug)]
pub struct Tally {
    get_us: Histogram<u64>,
    put_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// GETs answered `not_found`: a read of an absent key, not a failure.
    get_misses: u64,
    ops: u64,
    /// When the last operation finished; the run's duration ends there, not when a
    /// supervising thread noticed.
    finished_at: Option<Instant>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Result<Self, String> {
        let histogram = || {
            Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
                .map_err(|err| format!("cannot make a latency histogram: {err}"))
        };
        Ok(Self {
            get_us: histogram()?,
            put_us: histogram()?,
            errors: BTreeMap::new(),
            get_misses: 0,
            ops: 0,
            finished_at: None,
        })
    }

    /// An eventual-mode node's `timeout` answer (a code of its own, beyond section 1's).
    pub fn timed_out(&mut self, kind: OpKind, latency: Duration) {
        self.answered(kind, latency, None);
        *self.errors.entry("timeout".to_owned()).or_default() += 1;
    }

    /// One answered operation; `error` is the answer's error code, if it was one. A GET
    /// answered `not_found` counts as a miss, not as an error.
    pub fn answered(&mut self, kind: OpKind, latency: Duration, error: Option<ErrorCode>) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        match kind {
            OpKind::Get => self.get_us.saturating_record(us),
            OpKind::Put => self.put_us.saturating_record(us),
        }
        match (kind, error) {
            (_, None) => {}
            (OpKind::Get, Some(ErrorCode::NotFound)) => self.get_misses += 1,
            (_, Some(code)) => *self.errors.entry(code.as_str().to_owned()).or_default() += 1,
        }
        self.ops += 1;
    }

    /// Operations whose answers were lost with their connection.
    pub fn lost(&mut self, count: u64) {
        if count > 0 {
            *self.errors.entry(CONNECTION_ERROR.to_owned()).or_default() += count;
            self.ops += count;
        }
    }

    /// Notes that the run's work is done.
    pub fn finish(&mut self) {
        self.finished_at = Some(Instant::now());
    }

    /// When the last operation of any merged connection finished.
    pub fn finished_at(&self) -> Option<Instant> {
        self.finished_at
    }

    /// Error counts by code.
    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }

    /// Operations that got an error answer or none.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The CPU time spent during the measured phase.
#[derive(Clone, Debug)]
pub struct CpuUse {
    /// The cluster's processes that were measured.
    pub pids: Vec<u32>,
    /// Their user and system time, in microseconds, summed.
    pub cluster_us: (u64, u64),
    /// The load generator's own user and system time, in microseconds.
    pub bench_us: (u64, u64),
}

impl CpuUse {
    fn per_op(us: (u64, u64), ops: u64) -> f64 {
        if ops == 0 {
            return 0.0;
        }
        (us.0 + us.1) as f64 / ops as f64
    }
}

/// A finished run, ready to print.
pub struct Report<'a> {
    /// Everything measured.
    pub tally: &'a Tally,
    /// From the first request to the last answer.
    pub duration: Duration,
    /// Connections used.
    pub connections: u64,
    /// Requests in flight per connection.
    pub pipeline: u64,
    /// CPU time, when the cluster's processes were known.
    pub cpu: Option<&'a CpuUse>,
}

impl Report<'_> {
    fn ops_per_s(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.tally.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// The machine-readable line.
    pub fn json(&self) -> String {
        let kind = |h: &Histogram<u64>| {
            json!({
                "count": h.len(),
                "p50_us": h.value_at_quantile(0.5),
                "p99_us": h.value_at_quantile(0.99),
                "p999_us": h.value_at_quantile(0.999),
                "max_us": h.max(),
            })
        };
        let mut get = kind(&self.tally.get_us);
        if let Some(fields) = get.as_object_mut() {
            fields.insert("misses".into(), self.tally.get_misses.into());
        }
        let ops = self.tally.ops;
        let cpu = self.cpu.map(|cpu| {
            json!({
                "pids": cpu.pids,
                "cluster_user_us": cpu.cluster_us.0,
                "cluster_system_us": cpu.cluster_us.1,
                "cluster_us_per_op": CpuUse::per_op(cpu.cluster_us, ops),
                "bench_us_per_op": CpuUse::per_op(cpu.bench_us, ops),
            })
        });
        json!({
            "ops": ops,
            "duration_s": self.duration.as_secs_f64(),
            "ops_per_s": self.ops_per_s(),
            "errors": self.tally.errors,
            "get": get,
            "put": kind(&self.tally.put_us),
            "cpu": cpu,
        })
        .to_string()
    }

    /// The table for people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{} ops in {:.2} s: {:.0} ops/s ({} connections, pipeline {})\n",
            self.tally.ops,
            self.duration.as_secs_f64(),
            self.ops_per_s(),
            self.connections,
            self.pipeline
        );
        let _ = writeln!(
            out,
            "{:<4} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "op", "count", "p50 us", "p99 us", "p99.9 us", "max us"
        );
        for (name, h) in [("get", &self.tally.get_us), ("put", &self.tally.put_us)] {
            let _ = writeln!(
                out,
                "{name:<4} {:>10} {:>10} {:>10} {:>10} {:>10}",
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            );
        }
        if self.tally.get_misses > 0 {
            let _ = writeln!(
                out,
                "get misses (not_found): {}; --preload writes every key first",
                self.tally.get_misses
            );
        }
        match self.cpu {
            Some(cpu) => {
                let ops = self.tally.ops;
                let _ = writeln!(
                    out,
                    "cpu per op: cluster {:.1} us (user {} ms, system {} ms; pids {:?}), bench {:.1} us",
                    CpuUse::per_op(cpu.cluster_us, ops),
                    cpu.cluster_us.0 / 1000,
                    cpu.cluster_us.1 / 1000,
                    cpu.pids,
                    CpuUse::per_op(cpu.bench_us, ops),
                );
            }
            None => out.push_str(
                "cpu per op: unknown (no process listens on --addr here; name them with --pids)\n",
            ),
        }
        if self.tally.errors.is_empty() {
            out.push_str("errors: none\n");
        } else {
            let list: Vec<String> = self
                .tally
                .errors
                .iter()
                .map(|(code, count)| format!("{code} {count}"))
                .collect();
            let _ = writeln!(out, "errors: {}", list.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_reports_counts_percentiles_errors_and_cpu() {
        let mut a = Tally::new().unwrap();
        let b = &mut a;
        for us in 1..=100 {
            b.answered(OpKind::Get, Duration::from_micros(us), None);
        }
        b.answered(
            OpKind::Put,
            Duration::from_micros(500),
            Some(ErrorCode::Overloaded),
        );
        b.answered(
            OpKind::Get,
            Duration::from_micros(7),
            Some(ErrorCode::NotFound),
        );
        b.lost(2);
        assert_eq!(a.ops, 104);
        assert_eq!(a.error_count(), 3);
        let report = Report {
            tally: &a,
            duration: Duration::from_secs(1),
            connections: 2,
            pipeline: 1,
            cpu: Some(&CpuUse {
                pids: vec![7, 8],
                cluster_us: (4000, 1200),
                bench_us: (1040, 0),
            }),
        };
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["ops"], 104);
        assert_eq!(json["get"]["count"], 101);
        assert_eq!(json["get"]["misses"], 1);
        assert_eq!(json["get"]["max_us"], 100);
        assert_eq!(json["put"]["count"], 1);
        assert_eq!(json["errors"]["overloaded"], 1);
        assert_eq!(json["errors"]["connection"], 2);
        assert_eq!(json["cpu"]["cluster_us_per_op"], 50.0);
        assert_eq!(json["cpu"]["bench_us_per_op"], 10.0);
        assert_eq!(json["cpu"]["pids"], serde_json::json!([7, 8]));
        let text = report.text();
        assert!(text.starts_with("104 ops in 1.00 s: 104 ops/s"), "{text}");
        assert!(text.contains("misses (not_found): 1"), "{text}");
        assert!(
            text.contains("errors: connection 2, overloaded 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "cpu per op: cluster 50.0 us (user 4 ms, system 1 ms; pids [7, 8]), bench 10.0 us"
            ),
            "{text}"
        );
    }
}
