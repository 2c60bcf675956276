//! End to end: `harness --brokers 3 --replication 3 --kill-leader-at 1s --restart-after 1s`
//! starts a real three-broker cluster, SIGKILLs the leader of partition 0 one second into the
//! measured period and restarts it a second later, while idempotent producers (acks=all) and
//! tailing consumers carry on through the failover. The run's JSON summary must show that
//! the kill happened, that the actors failed over, and that every acknowledged record was
//! consumed exactly once, in order.

use std::process::Command;

#[test]
fn no_acknowledged_record_is_lost_or_duplicated_when_the_leader_is_killed() {
    let data_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kill-leader");
    let output = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "--brokers",
            "3",
            "--replication",
            "3",
            "--strategy",
            "buffered",
        ])
        .args(["--duration", "4s", "--warmup", "1s"])
        .args(["--kill-leader-at", "1s", "--restart-after", "1s"])
        // Fence the dead broker within a second instead of Kafka's 9 s.
        .args(["--broker-session-timeout", "1s"])
        .args(["--partitions", "3", "--consume", "during"])
        .args(["--append-bytes", "64KiB", "--segment-bytes", "16MiB"])
        .args(["--no-save", "--json"])
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .expect("the harness runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the harness failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON summary on stdout:\n{stdout}\n{stderr}"));
    let summary: serde_json::Value = serde_json::from_str(line).expect("the summary is JSON");

    let faults = &summary["faults"];
    assert!(faults["killed_at_s"].as_f64().is_some(), "{faults}");
    assert!(faults["restarted_at_s"].as_f64().is_some(), "{faults}");
    assert!(faults["producer_failovers"].as_u64() >= Some(1), "{faults}");

    let verification = &summary["verification"];
    let acknowledged = verification["acknowledged_records"].as_u64();
    assert!(acknowledged > Some(0), "{verification}");
    assert_eq!(
        verification["lost_records"].as_u64(),
        Some(0),
        "{verification}"
    );
    assert_eq!(
        verification["duplicated_records"].as_u64(),
        Some(0),
        "{verification}"
    );
    assert_eq!(
        verification["out_of_order_batches"].as_u64(),
        Some(0),
        "{verification}"
    );
    assert_eq!(
        verification["consumed_acknowledged_records"].as_u64(),
        acknowledged,
        "{verification}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}
