//! `./infra/local/run --watch`'s restart logic (infra/local/watch.sh), with a stand-in
//! build: each "build" makes a tiny HTTP server that serves the version written in a
//! watched file, so a swap is seen in milliseconds instead of a cargo build.
//! (`infra/local/watch-check` does the same with real builds of a copy of the repo.)

use std::{
    io::Read,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Replaces `dc_watch_build`: version N of the "gateway" answers GET /version with the
/// contents of shared/src/lib.rs; contents starting with `broken` fail like rustc.
const DRIVER: &str = r#"
set -euo pipefail
source "$REPO/infra/local/lib.sh"
source "$REPO/infra/local/watch.sh"
dc_install_traps
dc_watch_build() {
  local out="$1" version
  version="$(cat shared/src/lib.rs)"
  if [[ "$version" == broken* ]]; then
    echo "error[E0425]: cannot find value \`oops\` in this scope" >&2
    return 1
  fi
  mkdir -p "$out.www"
  printf '%s' "$version" >"$out.www/version"
  printf '#!/bin/sh\n[ "$1" = check ] && exit 0\nexec python3 -m http.server --bind 127.0.0.1 "$PORT" --directory "%s"\n' "$out.www" >"$out"
  chmod +x "$out"
}
dc_new_state_dir
dc_watch "$DC_STATE_DIR"
"#;

/// The supervisor; stopped (TERM, as Ctrl-C would) when dropped.
struct Watch {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watch {
    fn output(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        text
    }
}

/// What GET /version answers on `port`, `None` if nothing listens.
async fn version(port: u16) -> Option<String> {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/version"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    response.text().await.ok()
}

/// Waits (at most 20 s) until `port` serves `expected`.
async fn serves(port: u16, expected: &str, watch: &Watch) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if version(port).await.as_deref() == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "version {expected} not served within 20 s; supervisor said:\n{}",
            watch.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn edit(root: &Path, contents: &str) {
    std::fs::write(root.join("shared/src/lib.rs"), contents).expect("edit");
}

#[tokio::test]
async fn watch_swaps_in_each_good_build_and_keeps_the_old_gateway_serving_through_a_failed_one() {
    let repo = local_gateway::default_template_path()
        .parent()
        .expect("the repository root")
        .to_path_buf();
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(root.path().join("shared/src")).expect("mkdir");
    std::fs::write(root.path().join("template.yaml"), "Resources: {}\n").expect("template");
    edit(root.path(), "1");
    let log = root.path().join("watch.log");
    let port = devconnect_tests::servers::free_port();
    let child = Command::new("bash")
        .args(["-c", DRIVER])
        .current_dir(root.path())
        .env("REPO", &repo)
        .env("PORT", port.to_string())
        .env("DC_WATCH_POLL_SECS", "0.2")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::options().append(true).open(&log).expect("log"))
        .spawn()
        .expect("bash");
    let watch = Watch { child, log };

    serves(port, "1", &watch).await;
    edit(root.path(), "2");
    serves(port, "2", &watch).await;

    edit(root.path(), "broken");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !watch.output().contains("build 3 FAILED") {
        assert!(
            Instant::now() < deadline,
            "no failed build reported:\n{}",
            watch.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        watch.output().contains("error[E0425]"),
        "the compiler's error is printed:\n{}",
        watch.output()
    );
    assert_eq!(
        version(port).await.as_deref(),
        Some("2"),
        "the last good build keeps serving"
    );

    edit(root.path(), "4");
    serves(port, "4", &watch).await;
    drop(watch);
    assert_eq!(version(port).await, None, "stopping the supervisor stops the gateway");
}
