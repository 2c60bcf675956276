//! One broker per data directory and per port (issue 13, item 6): a second broker process
//! started on a running broker's port, or on its data directory, refuses to start with a
//! message that says why, and the first keeps serving a real client.

mod common_broker;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common_broker::{require_tool, BrokerProcess};

/// A refused start ends at once; a broker still running after this long was not refused.
const REFUSAL_WITHIN: Duration = Duration::from_secs(20);

/// Runs the broker binary with `flags`; its output once it ends, or a failure if it is still
/// running after [`REFUSAL_WITHIN`] (it started: then it is killed).
fn run_second_broker(flags: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--cores", "1"])
        .args(flags)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the broker binary");
    let started = Instant::now();
    while child.try_wait().expect("wait for the broker").is_none() {
        if started.elapsed() > REFUSAL_WITHIN {
            let _ = child.kill();
            let output = child
                .wait_with_output()
                .expect("collect the broker's output");
            panic!(
                "the second broker ({flags:?}) started instead of refusing: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .expect("collect the broker's output")
}

fn assert_refused(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the second broker started: {stderr}"
    );
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

#[test]
fn a_second_broker_on_a_taken_port_or_data_directory_refuses_to_start() {
    require_tool("kcat", "kcat", &["-V"]);
    let mut first = BrokerProcess::start("ownership", &["--strategy", "buffered"]);
    let other_dir = tempfile::Builder::new()
        .prefix("broker-ownership-second-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temporary directory");

    let address = first.address().to_string();
    let data = other_dir.path().join("data").display().to_string();
    let same_port = run_second_broker(&["--listen", &address, "--data-dir", &data]);
    assert_refused(&same_port, "Address already in use");

    let taken_data = first.data_dir().display().to_string();
    let same_data = run_second_broker(&["--listen", "127.0.0.1:0", "--data-dir", &taken_data]);
    assert_refused(&same_data, "in use by another broker process");

    // The first broker never noticed: a real client still gets its metadata.
    let listed = Command::new("kcat")
        .args(["-b", &first.bootstrap(), "-L", "-m", "10"])
        .output()
        .expect("run kcat");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "kcat -L failed: {text}");
    assert!(text.contains("1 brokers"), "{text}");
    first.assert_running();
}
