//! Samples grouped by run, and the summaries the report prints: median and p99 over all samples,
//! and the spread (min–max) of the per-run medians.

use std::time::Duration;

/// Latency samples in milliseconds, one vector per repeated run.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub runs: Vec<Vec<f64>>,
    /// Attempts that failed (timed out, errored): counted, never folded into the numbers.
    pub failures: usize,
}

impl Series {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn start_run(&mut self) {
        self.runs.push(Vec::new());
    }

    pub fn push(&mut self, d: Duration) {
        self.push_ms(d.as_secs_f64() * 1e3);
    }

    pub fn push_ms(&mut self, ms: f64) {
        if self.runs.is_empty() {
            self.runs.push(Vec::new());
        }
        self.runs.last_mut().expect("a run").push(ms);
    }

    pub fn n(&self) -> usize {
        self.runs.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.n() == 0
    }

    fn all_sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.runs.iter().flatten().copied().collect();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn median(&self) -> Option<f64> {
        percentile(&self.all_sorted(), 0.5)
    }

    pub fn p99(&self) -> Option<f64> {
        percentile(&self.all_sorted(), 0.99)
    }

    pub fn min(&self) -> Option<f64> {
        self.all_sorted().first().copied()
    }

    pub fn max(&self) -> Option<f64> {
        self.all_sorted().last().copied()
    }

    /// (min, max) of the medians of the individual runs.
    pub fn run_median_range(&self) -> Option<(f64, f64)> {
        let meds: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| !r.is_empty())
            .filter_map(|r| {
                let mut r = r.clone();
                r.sort_by(f64::total_cmp);
                percentile(&r, 0.5)
            })
            .collect();
        let lo = meds.iter().copied().reduce(f64::min)?;
        let hi = meds.iter().copied().reduce(f64::max)?;
        Some((lo, hi))
    }

    pub fn nonempty_runs(&self) -> usize {
        self.runs.iter().filter(|r| !r.is_empty()).count()
    }
}

/// Nearest-rank percentile of sorted data.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median of unsorted values.
pub fn median_of(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}
