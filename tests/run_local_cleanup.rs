//! `make run | tee run.log`, then Ctrl-C: the script must still stop every service it
//! started, though its output pipe is dead by the time it cleans up.
//!
//! The real stack needs MLflow (10-30 s to start, ~0.5 GB), so these tests drive the
//! process management `scripts/run-local.sh` sources (`scripts/lib/services.sh`) with
//! stand-in services: process groups with workers, like MLflow, and one that ignores
//! TERM. A driver script uses the library exactly as run-local.sh does; its output goes
//! through a pipe to a reader the test kills first, as Ctrl-C kills tee.

mod e2e;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::paths::{self, TempDir};
use e2e::procs::ProcessGroup;

/// Follows the library's calling convention in run-local.sh: strict mode, traps, services
/// started, a banner on stdout, then `follow` until the end.
const DRIVER: &str = r#"
set -euo pipefail
source "$LIB"
stop_on_exit
# Like MLflow: a leader with workers. And one that only KILL stops.
start workers "$DIR/workers.log" "$DIR/workers.log" bash -c 'sleep 300 & sleep 300 & wait'
start stubborn "$DIR/stubborn.out" "$DIR/stubborn.err" bash -c 'trap "" TERM; sleep 300 & wait'
start follower "$DIR/follower.log" "$DIR/follower.log" sleep 300
printf '%s\n' "${PGIDS[@]}" >"$DIR/pgids.tmp"
mv "$DIR/pgids.tmp" "$DIR/pgids"
echo "driver: ready"
follow "$DIR/followed.log" "${PGIDS[-1]}"
"#;

/// What ends the script once the reader is gone (or, for `PlainCtrlC`, still there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The baseline: Ctrl-C with the reader alive.
    PlainCtrlC,
    /// Ctrl-C: SIGINT to the terminal's foreground process group.
    Interrupt,
    /// The terminal closes: SIGHUP to the same group.
    Hangup,
    /// No signal for the script at all: its next write (tail printing a new log line)
    /// meets the dead pipe.
    NextWrite,
}

/// Pids of the processes in group `pgid` that are alive (zombies do not count: whoever
/// inherits them reaps them in its own time).
fn live_members(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after it.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            pids.push(pid);
        }
    }
    pids
}

fn signal_group(signal: &str, pgid: u32) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

fn signal_pid(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Kills the stand-ins' groups however the test ends, so nothing outlives it.
struct Services(Vec<u32>);

impl Drop for Services {
    fn drop(&mut self) {
        for &pgid in &self.0 {
            signal_group("KILL", pgid);
        }
    }
}

/// Polls `done` every 50 ms, at most `tries` times.
async fn eventually(tries: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn services_stop_after(ending: Ending) {
    let dir = TempDir::new("run-local");
    std::fs::write(dir.join("driver.sh"), DRIVER).unwrap();
    std::fs::write(dir.join("followed.log"), "first line\n").unwrap();
    // The pipeline a terminal would run for `make run | tee run.log`, as its own process
    // group (the terminal's foreground job). The reader records its pid, then becomes cat.
    // A terminal's foreground job has these signals at their defaults; a suite started in
    // the background (`make test &`) has INT ignored, which children inherit and bash
    // cannot trap. Reset them, as the terminal would have them.
    let mut cmd = Command::new("env");
    cmd.args(["--default-signal=INT,HUP,TERM,PIPE", "bash", "-c"])
        .arg(r#"bash "$DIR/driver.sh" | { echo "$BASHPID" >"$DIR/reader.pid"; exec cat >"$DIR/reader.out"; }"#)
        .env("LIB", paths::repo_root().join("scripts/lib/services.sh"))
        .env("DIR", dir.path())
        // The stubborn stand-in costs the grace period: keep it short here.
        .env("STOP_GRACE_TICKS", "5");
    let mut job = ProcessGroup::spawn(
        "run-local driver",
        cmd,
        &dir.join("job.out"),
        &dir.join("driver.err"),
    );

    let up = eventually(200, || {
        read(&dir.join("reader.out")).contains("driver: ready")
    })
    .await;
    assert!(
        up,
        "the driver never got ready:\n{}",
        read(&dir.join("driver.err"))
    );
    let pgids: Vec<u32> = read(&dir.join("pgids"))
        .lines()
        .map(|l| l.parse().expect("a process group id"))
        .collect();
    let services = Services(pgids.clone());
    assert_eq!(services.0.len(), 3);
    for &pgid in &pgids {
        assert!(
            !live_members(pgid).is_empty(),
            "service group {pgid} is not running"
        );
    }

    // The reader dies first (Ctrl-C reaches tee as well; tee exits at once).
    if ending != Ending::PlainCtrlC {
        let reader: u32 = read(&dir.join("reader.pid"))
            .trim()
            .parse()
            .expect("reader pid");
        signal_pid("KILL", reader);
        let reader_gone = eventually(100, || {
            read(&Path::new("/proc").join(reader.to_string()).join("stat"))
                .rsplit_once(')')
                .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .await;
        assert!(reader_gone, "the reader did not die");
    }

    match ending {
        Ending::PlainCtrlC | Ending::Interrupt => signal_group("INT", job.pid()),
        Ending::Hangup => signal_group("HUP", job.pid()),
        Ending::NextWrite => {
            std::fs::write(dir.join("followed.log"), "first line\nsecond line\n").unwrap();
        }
    }

    // TERM, then KILL for the stubborn one after 0.5 s: 10 s is plenty.
    let stopped = eventually(200, || pgids.iter().all(|&g| live_members(g).is_empty())).await;
    let leftovers: Vec<(u32, Vec<u32>)> = pgids.iter().map(|&g| (g, live_members(g))).collect();
    drop(services);
    assert!(
        stopped,
        "{ending:?}: services still running after the pipe died (group, pids): \
         {leftovers:?}\ndriver stderr:\n{}",
        read(&dir.join("driver.err"))
    );
    let driver_done = eventually(100, || job.exited().is_some()).await;
    assert!(driver_done, "{ending:?}: the driver did not exit");
    assert!(
        read(&dir.join("driver.err")).contains("run-local: stopping workers stubborn follower"),
        "{ending:?}: the cleanup's message should reach stderr:\n{}",
        read(&dir.join("driver.err"))
    );
}

#[tokio::test]
async fn ctrl_c_stops_every_service() {
    services_stop_after(Ending::PlainCtrlC).await;
}

#[tokio::test]
async fn ctrl_c_after_the_pipe_died_stops_every_service() {
    services_stop_after(Ending::Interrupt).await;
}

#[tokio::test]
async fn a_closed_terminal_after_the_pipe_died_stops_every_service() {
    services_stop_after(Ending::Hangup).await;
}

#[tokio::test]
async fn a_write_to_the_dead_pipe_stops_every_service() {
    services_stop_after(Ending::NextWrite).await;
}
