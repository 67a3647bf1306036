//! What the benchmarks share: progress lines, environment knobs, the JSON
//! line a tool prints last, and the summary of repeated measurements these
//! noisy machines need (median with min and max).

use serde_json::{Value, json};

/// A progress line on stderr (stdout carries the figures).
pub fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The last line of `out` that parses as JSON (the tools print their result last).
pub fn json_line(out: &str) -> Value {
    out.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null)
}

/// A number from a JSON object (NaN when absent).
pub fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Median, min and max of repeated measurements (NaNs left out).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Self { median, min: v.first().copied().unwrap_or(f64::NAN), max: v.last().copied().unwrap_or(f64::NAN), n }
    }

    /// `{median, min, max, n}` rounded to `digits` decimals.
    pub fn json(&self, digits: i32) -> Value {
        let r = |x: f64| {
            let f = 10f64.powi(digits);
            (x * f).round() / f
        };
        json!({ "median": r(self.median), "min": r(self.min), "max": r(self.max), "n": self.n })
    }

    pub fn show(&self, digits: usize) -> String {
        format!("{:.digits$} (min {:.digits$}, max {:.digits$}, n={})", self.median, self.min, self.max, self.n)
    }
}

/// CPU seconds (user + system) process `pid` has used, from `/proc/<pid>/stat`.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts_and_nan_left_out() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        let s = Summary::of(&[f64::NAN, 5.0, 1.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 2));
        assert!(Summary::of(&[]).median.is_nan());
    }
}
