//! `--find-max-rate`: the highest producer rate the cluster sustains, found with a few short
//! trials, so that latency can then be reported at half of it (where a system is normally
//! run, and where the p99 target is set).
//!
//! A trial runs the workload at a fixed rate with consumers tailing the producers. It is
//! *sustained* when the producers achieved at least [`ACHIEVED_SHARE_MIN`] of the target and
//! the consumers kept up: the backlog at the end is at most one second of traffic at the
//! target rate (or two batches per consumer, whichever is more, as one fetch may be in
//! flight).
//!
//! The search: the first trial runs as fast as acknowledged (rate 0); what it achieves is a
//! ceiling no fixed rate can beat. Then the ceiling itself is tried, and while trials fail the
//! rate halves; once one rate is sustained and a higher one is not, the rest bisect between
//! them, until they are within [`PRECISION`] of each other or the trials run out. The answer
//! is the highest sustained rate.

use std::time::Duration;

use serde::Serialize;

use crate::broker_workload::{self, BrokerWorkload, ConsumeMode};
use crate::kafka::{self, metadata, WorkloadError};

/// Share of the target rate a sustained trial must achieve.
pub const ACHIEVED_SHARE_MIN: f64 = 0.95;

/// The search stops once the failed and sustained rates are this close (relative).
pub const PRECISION: f64 = 0.05;

/// Lowest rate the search tries, in records per second.
pub const RATE_MIN: u64 = 1;

/// Whether a trial at `target_records_per_s` was sustained; `backlog_bytes_at_end` is `None`
/// when no consumer ran (the publish side alone decides).
pub fn sustained(
    target_records_per_s: u64,
    achieved_records_per_s: f64,
    backlog_bytes_at_end: Option<u64>,
    record_bytes: u64,
    backlog_allowance_bytes: u64,
) -> bool {
    let rate_kept = achieved_records_per_s >= ACHIEVED_SHARE_MIN * target_records_per_s as f64;
    let one_second_bytes = target_records_per_s.saturating_mul(record_bytes);
    let backlog_bounded = backlog_bytes_at_end
        .is_none_or(|backlog| backlog <= one_second_bytes.max(backlog_allowance_bytes));
    rate_kept && backlog_bounded
}

/// The search's state. Feed it each trial's verdict with [`RateSearch::record`] and ask
/// [`RateSearch::next_rate`] what to try next.
#[derive(Clone, Debug)]
pub struct RateSearch {
    /// The highest rate sustained so far.
    sustained: Option<u64>,
    /// The lowest rate not sustained so far.
    failed: Option<u64>,
    /// What the as-fast-as-acknowledged trial achieved.
    ceiling: Option<u64>,
    trials_left: usize,
}

impl RateSearch {
    /// A search of at most `trials_max` trials, the ceiling probe included.
    pub fn new(trials_max: usize) -> RateSearch {
        RateSearch {
            sustained: None,
            failed: None,
            ceiling: None,
            trials_left: trials_max,
        }
    }

    /// The next trial's rate (0: the ceiling probe, as fast as acknowledged), or `None` when
    /// the search is over.
    pub fn next_rate(&self) -> Option<u64> {
        if self.trials_left == 0 {
            return None;
        }
        let Some(ceiling) = self.ceiling else {
            return Some(0);
        };
        match (self.sustained, self.failed) {
            (None, None) => Some(ceiling),
            // The ceiling itself was sustained: nothing higher can be.
            (Some(_), None) => None,
            (None, Some(failed)) => (failed / 2 >= RATE_MIN).then_some(failed / 2),
            (Some(sustained), Some(failed)) => {
                let gap = failed.saturating_sub(sustained) as f64;
                (gap > PRECISION * sustained as f64 && failed - sustained > 1)
                    .then_some(sustained + (failed - sustained) / 2)
            }
        }
    }

    /// Records a trial. For the ceiling probe (rate 0), `achieved_records_per_s` sets the
    /// ceiling and `sustained` is ignored.
    pub fn record(&mut self, rate: u64, achieved_records_per_s: f64, sustained: bool) {
        self.trials_left = self.trials_left.saturating_sub(1);
        if rate == 0 {
            self.ceiling = Some((achieved_records_per_s.max(0.0) as u64).max(RATE_MIN));
            return;
        }
        if sustained {
            self.sustained = Some(self.sustained.map_or(rate, |known| known.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |known| known.min(rate)));
        }
    }

    /// The highest sustained rate found, if any.
    pub fn result(&self) -> Option<u64> {
        self.sustained
    }
}

/// One trial, as the results report it.
#[derive(Serialize, Debug, Clone)]
pub struct Trial {
    /// Records per second asked for; 0 = as fast as acknowledged (the ceiling probe).
    pub target_records_per_s: u64,
    pub achieved_records_per_s: f64,
    pub backlog_mb_at_end: Option<f64>,
    pub publish_p99_us: u64,
    pub sustained: bool,
}

/// What `--find-max-rate` found.
#[derive(Serialize, Debug, Clone)]
pub struct SearchSummary {
    pub max_sustainable_records_per_s: u64,
    /// The rate of the measured run that follows: half the maximum.
    pub run_records_per_s: u64,
    pub trial_duration_s: f64,
    pub trials: Vec<Trial>,
}

/// Runs the search: each trial is `workload` at one rate for `trial_duration` (after its
/// warm-up), on a topic of its own that is deleted afterwards, with the consumers tailing.
pub fn find_max_rate(
    workload: &BrokerWorkload,
    trial_duration: Duration,
    trials_max: usize,
) -> Result<SearchSummary, WorkloadError> {
    let mut search = RateSearch::new(trials_max);
    let mut trials = Vec::new();
    while let Some(rate) = search.next_rate() {
        let trial = run_trial(workload, rate, trial_duration, trials.len())?;
        eprintln!(
            "harness: rate trial {}: target {} records/s, achieved {:.0}, backlog {} MB, p99 {} us: {}",
            trials.len() + 1,
            if rate == 0 { "max".to_string() } else { rate.to_string() },
            trial.achieved_records_per_s,
            trial
                .backlog_mb_at_end
                .map_or("-".to_string(), |backlog| format!("{backlog:.1}")),
            trial.publish_p99_us,
            match (rate, trial.sustained) {
                (0, _) => "the ceiling",
                (_, true) => "sustained",
                (_, false) => "not sustained",
            }
        );
        search.record(rate, trial.achieved_records_per_s, trial.sustained);
        trials.push(trial);
    }
    let Some(max) = search.result() else {
        return Err(WorkloadError::Unsupported {
            what: format!(
                "--find-max-rate: no rate was sustained in {} trials",
                trials.len()
            ),
        });
    };
    Ok(SearchSummary {
        max_sustainable_records_per_s: max,
        run_records_per_s: (max / 2).max(RATE_MIN),
        trial_duration_s: trial_duration.as_secs_f64(),
        trials,
    })
}

fn run_trial(
    workload: &BrokerWorkload,
    rate: u64,
    trial_duration: Duration,
    index: usize,
) -> Result<Trial, WorkloadError> {
    let mut trial = workload.clone();
    trial.topic = format!("{}-rate-trial-{}", workload.topic, index + 1);
    trial.rate_records_per_s = rate;
    trial.duration = trial_duration;
    trial.consume = ConsumeMode::During;
    trial.faults = None;
    let outcome = broker_workload::run(&trial);
    // The trial's data would only fill the disk: delete it whatever happened.
    let deleted = kafka::open(&workload.bootstrap, "shardlog-harness-rate-search")
        .and_then(|mut connection| metadata::delete_topic(&mut connection, &trial.topic));
    let outcome = outcome?;
    deleted?;
    let publish = outcome.publish.ok_or_else(|| WorkloadError::Unsupported {
        what: "--find-max-rate needs producers".to_string(),
    })?;
    let achieved_records_per_s = publish.records as f64 / publish.elapsed.as_secs_f64().max(1e-9);
    let backlog_allowance_bytes = 2 * outcome.batch_bytes * workload.consumers.max(1) as u64;
    Ok(Trial {
        target_records_per_s: rate,
        achieved_records_per_s,
        backlog_mb_at_end: publish.backlog_bytes_at_end.map(|bytes| bytes as f64 / 1e6),
        publish_p99_us: publish.latency_us.value_at_quantile(0.99),
        sustained: rate > 0
            && sustained(
                rate,
                achieved_records_per_s,
                publish.backlog_bytes_at_end,
                workload.record_bytes,
                backlog_allowance_bytes,
            ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a system that sustains exactly `capacity` records/s and, as
    /// fast as acknowledged, achieves `burst`. Returns the result and the trials' rates.
    fn search(capacity: u64, burst: f64, trials_max: usize) -> (Option<u64>, Vec<u64>) {
        let mut search = RateSearch::new(trials_max);
        let mut tried = Vec::new();
        while let Some(rate) = search.next_rate() {
            tried.push(rate);
            let achieved = if rate == 0 {
                burst
            } else {
                rate.min(capacity) as f64
            };
            search.record(rate, achieved, rate != 0 && rate <= capacity);
        }
        (search.result(), tried)
    }

    #[test]
    fn a_sustained_ceiling_ends_the_search_at_once() {
        let (result, tried) = search(100_000, 90_000.0, 8);
        assert_eq!(result, Some(90_000));
        assert_eq!(tried, vec![0, 90_000]);
    }

    #[test]
    fn bisects_below_an_unsustainable_ceiling() {
        let (result, tried) = search(70_000, 100_000.0, 10);
        assert_eq!(tried[..3], [0, 100_000, 50_000]);
        let found = result.expect("50,000 was sustained");
        assert!(found <= 70_000, "{found}");
        assert!(found as f64 >= 70_000.0 * (1.0 - PRECISION), "{found}");
    }

    #[test]
    fn halves_until_something_is_sustained() {
        let (result, tried) = search(10_000, 100_000.0, 12);
        assert_eq!(tried[..5], [0, 100_000, 50_000, 25_000, 12_500]);
        let found = result.expect("6,250 was sustained");
        assert!((9_500..=10_000).contains(&found), "{found}");
    }

    #[test]
    fn stops_when_the_trials_run_out_and_reports_the_best_so_far() {
        let (result, tried) = search(70_000, 100_000.0, 4);
        assert_eq!(tried, vec![0, 100_000, 50_000, 75_000]);
        assert_eq!(result, Some(50_000));
        let (nothing, _) = search(0, 100_000.0, 3);
        assert_eq!(nothing, None);
    }

    #[test]
    fn a_trial_is_sustained_when_the_rate_holds_and_consumers_keep_up() {
        // 1,000 records/s of 1 KB: a backlog of up to 1 MB (or the allowance) is fine.
        assert!(sustained(1_000, 990.0, Some(500_000), 1_000, 0));
        assert!(sustained(1_000, 950.0, None, 1_000, 0));
        assert!(!sustained(1_000, 940.0, None, 1_000, 0));
        assert!(!sustained(1_000, 1_000.0, Some(1_500_000), 1_000, 0));
        assert!(sustained(1_000, 1_000.0, Some(1_500_000), 1_000, 2_000_000));
    }
}
