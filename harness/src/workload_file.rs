//! OpenMessaging Benchmark workload files (`--workload FILE.yaml`), so the standard OMB
//! workloads run unchanged and results stay comparable.
//!
//! The fields are OMB's, with OMB's meaning; what the harness cannot do is refused with a
//! message rather than run differently from what the file says:
//!
//! | field                      | harness setting                 | accepted values     |
//! | -------------------------- | ------------------------------- | ------------------- |
//! | `topics`                   | (one topic, `--topic`)          | 1                   |
//! | `partitionsPerTopic`       | `--partitions`                  | >= 1                |
//! | `messageSize`              | `--record-bytes`                | >= 1                |
//! | `producersPerTopic`        | `--producers`                   | >= 0                |
//! | `subscriptionsPerTopic`    | (one subscription)              | 1                   |
//! | `consumerPerSubscription`  | `--consumers`                   | >= 0                |
//! | `producerRate`             | `--rate` (records/s, 0 = max)   | >= 0                |
//! | `testDurationMinutes`      | `--duration`                    | >= 0                |
//! | `warmupDurationMinutes`    | `--warmup`                      | >= 0                |
//! | `keyDistributor`           | `--key-distributor`             | NO_KEY, KEY_ROUND_ROBIN, RANDOM_NANO |
//! | `consumerBacklogSizeGB`    | (no backlog phase)              | 0                   |
//!
//! `name` is kept for the record. `payloadFile`, `useRandomizedPayloads`, `randomBytesRatio`
//! and `randomizedPayloadPoolSize` choose payload bytes; the harness sends a fixed pattern
//! and compresses nothing, so the bytes do not change the work, and these are accepted and
//! ignored. Any other field is an error (a typo would otherwise run the wrong workload).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// How record keys are chosen (OMB's `keyDistributor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[clap(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyDistributor {
    /// Records have no key.
    NoKey,
    /// Keys cycle through a fixed pool, in order.
    KeyRoundRobin,
    /// Keys are drawn from the pool at random.
    RandomNano,
}

impl KeyDistributor {
    pub fn name(self) -> &'static str {
        match self {
            KeyDistributor::NoKey => "NO_KEY",
            KeyDistributor::KeyRoundRobin => "KEY_ROUND_ROBIN",
            KeyDistributor::RandomNano => "RANDOM_NANO",
        }
    }
}

/// A workload file as written, OMB's field names. Missing fields take OMB's defaults where
/// OMB has one, else leave the harness's setting alone.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkloadFile {
    name: Option<String>,
    topics: Option<u64>,
    partitions_per_topic: Option<i32>,
    message_size: Option<u64>,
    producers_per_topic: Option<usize>,
    subscriptions_per_topic: Option<u64>,
    consumer_per_subscription: Option<usize>,
    producer_rate: Option<f64>,
    test_duration_minutes: Option<f64>,
    warmup_duration_minutes: Option<f64>,
    key_distributor: Option<KeyDistributor>,
    #[serde(rename = "consumerBacklogSizeGB")]
    consumer_backlog_size_gb: Option<f64>,
    // Payload choices: accepted, not used (see the module comment).
    #[allow(dead_code)]
    payload_file: Option<String>,
    #[allow(dead_code)]
    use_randomized_payloads: Option<bool>,
    #[allow(dead_code)]
    random_bytes_ratio: Option<f64>,
    #[allow(dead_code)]
    randomized_payload_pool_size: Option<u64>,
}

/// What a workload file sets, checked. `None`: the file does not say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadSettings {
    /// The file's stem (`1-topic-16-partitions-1kb`): names the results folder.
    pub file_stem: String,
    /// OMB's `name`, for the record.
    pub name: Option<String>,
    pub partitions: Option<i32>,
    pub record_bytes: Option<u64>,
    pub producers: Option<usize>,
    pub consumers: Option<usize>,
    pub rate_records_per_s: Option<u64>,
    pub duration: Option<Duration>,
    pub warmup: Option<Duration>,
    pub key_distributor: Option<KeyDistributor>,
}

/// Reads and checks a workload file.
pub fn load(path: &Path) -> Result<WorkloadSettings, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let file_stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workload".to_string());
    parse(&text, file_stem).map_err(|error| format!("{}: {error}", path.display()))
}

/// Parses and checks a workload file's text.
pub fn parse(text: &str, file_stem: String) -> Result<WorkloadSettings, String> {
    let file: WorkloadFile = serde_norway::from_str(text).map_err(|error| error.to_string())?;
    if let Some(topics) = file.topics.filter(|&topics| topics != 1) {
        return Err(format!(
            "topics: {topics}: the harness drives one topic; use topics: 1"
        ));
    }
    if let Some(subscriptions) = file.subscriptions_per_topic.filter(|&count| count != 1) {
        return Err(format!(
            "subscriptionsPerTopic: {subscriptions}: the harness reads each record once \
             (one subscription); use subscriptionsPerTopic: 1"
        ));
    }
    if let Some(backlog) = file.consumer_backlog_size_gb.filter(|&gb| gb != 0.0) {
        return Err(format!(
            "consumerBacklogSizeGB: {backlog}: building a backlog before consuming is not \
             supported; use 0 (or --consume after to read everything once producers stop)"
        ));
    }
    if let Some(partitions) = file.partitions_per_topic.filter(|&count| count < 1) {
        return Err(format!(
            "partitionsPerTopic: {partitions}: needs at least 1"
        ));
    }
    if file.message_size == Some(0) {
        return Err("messageSize: 0: needs at least 1 byte".to_string());
    }
    let rate_records_per_s = file.producer_rate.map(whole_rate).transpose()?;
    Ok(WorkloadSettings {
        file_stem,
        name: file.name,
        partitions: file.partitions_per_topic,
        record_bytes: file.message_size,
        producers: file.producers_per_topic,
        consumers: file.consumer_per_subscription,
        rate_records_per_s,
        duration: file
            .test_duration_minutes
            .map(|minutes| minutes_field("testDurationMinutes", minutes))
            .transpose()?,
        warmup: file
            .warmup_duration_minutes
            .map(|minutes| minutes_field("warmupDurationMinutes", minutes))
            .transpose()?,
        key_distributor: file.key_distributor,
    })
}

fn whole_rate(rate: f64) -> Result<u64, String> {
    if !(rate >= 0.0 && rate <= u64::MAX as f64) {
        return Err(format!(
            "producerRate: {rate}: needs 0 (as fast as acknowledged) or more"
        ));
    }
    Ok(rate.round() as u64)
}

fn minutes_field(field: &str, minutes: f64) -> Result<Duration, String> {
    if !(0.0..=7.0 * 24.0 * 60.0).contains(&minutes) {
        return Err(format!("{field}: {minutes}: needs 0 to a week of minutes"));
    }
    Ok(Duration::from_secs_f64(minutes * 60.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_PARTITION: &str = "
name: 1 topic / 1 partition / 1Kb
topics: 1
partitionsPerTopic: 1
keyDistributor: \"NO_KEY\"
messageSize: 1024
payloadFile: \"payload/payload-1Kb.data\"
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
testDurationMinutes: 15
";

    #[test]
    fn reads_the_standard_fields() {
        let settings = parse(ONE_PARTITION, "one".to_string()).expect("parses");
        assert_eq!(
            settings,
            WorkloadSettings {
                file_stem: "one".to_string(),
                name: Some("1 topic / 1 partition / 1Kb".to_string()),
                partitions: Some(1),
                record_bytes: Some(1024),
                producers: Some(1),
                consumers: Some(1),
                rate_records_per_s: Some(50_000),
                duration: Some(Duration::from_secs(900)),
                warmup: None,
                key_distributor: Some(KeyDistributor::NoKey),
            }
        );
    }

    #[test]
    fn reads_fractions_of_minutes_key_distributors_and_a_rate_of_zero() {
        let text = "partitionsPerTopic: 100\nproducerRate: 0\ntestDurationMinutes: 0.5\n\
                    warmupDurationMinutes: 0.1\nkeyDistributor: RANDOM_NANO\n\
                    useRandomizedPayloads: true\nrandomBytesRatio: 0.5\n\
                    randomizedPayloadPoolSize: 1000\n";
        let settings = parse(text, "x".to_string()).expect("parses");
        assert_eq!(settings.partitions, Some(100));
        assert_eq!(settings.rate_records_per_s, Some(0));
        assert_eq!(settings.duration, Some(Duration::from_secs(30)));
        assert_eq!(settings.warmup, Some(Duration::from_secs(6)));
        assert_eq!(settings.key_distributor, Some(KeyDistributor::RandomNano));
        assert_eq!(settings.producers, None);
        let round_robin = parse("keyDistributor: KEY_ROUND_ROBIN", "x".to_string());
        assert_eq!(
            round_robin.expect("parses").key_distributor,
            Some(KeyDistributor::KeyRoundRobin)
        );
    }

    fn refusal(text: &str) -> String {
        parse(text, "x".to_string()).expect_err("refused")
    }

    #[test]
    fn refuses_what_the_harness_cannot_do_and_says_why() {
        assert!(refusal("subscriptionsPerTopic: 2").contains("one subscription"));
        assert!(refusal("consumerBacklogSizeGB: 1").contains("backlog"));
        assert!(refusal("topics: 10").contains("one topic"));
        assert!(refusal("partitionsPerTopic: 0").contains("at least 1"));
        assert!(refusal("messageSize: 0").contains("at least 1"));
        assert!(refusal("producerRate: -5").contains("producerRate"));
        assert!(refusal("testDurationMinutes: -1").contains("testDurationMinutes"));
    }

    #[test]
    fn the_shipped_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut parsed = 0;
        for entry in std::fs::read_dir(&dir).expect("harness/workloads exists") {
            let path = entry.expect("a directory entry").path();
            if path
                .extension()
                .is_some_and(|extension| extension == "yaml")
            {
                let settings = load(&path).expect("a shipped workload parses");
                assert_eq!(settings.record_bytes, Some(1024), "{}", path.display());
                parsed += 1;
            }
        }
        assert_eq!(parsed, 7);
    }

    #[test]
    fn refuses_unknown_fields_and_values() {
        assert!(refusal("partitionPerTopic: 3").contains("unknown field"));
        assert!(refusal("keyDistributor: ZIPF").contains("unknown variant"));
        assert!(refusal("messageSize: big").contains("messageSize"));
    }
}
