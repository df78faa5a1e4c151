//! A child process in its own process group, killed with all its descendants on drop.
//! MLflow forks workers, and the venv's `envoy` is a Python shim that execs the real
//! binary: signalling the group is the only way to be sure nothing outlives a test.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

pub struct ProcessGroup {
    name: String,
    child: Child,
    logs: Vec<PathBuf>,
}

impl ProcessGroup {
    /// Starts `cmd` as the leader of a new process group, stdout and stderr to files.
    pub fn spawn(name: &str, mut cmd: Command, stdout: &Path, stderr: &Path) -> ProcessGroup {
        let out = File::create(stdout).expect("create stdout log");
        let err = File::create(stderr).expect("create stderr log");
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "e2e: cannot start {name} ({}): {e}",
                cmd.get_program().to_string_lossy()
            )
        });
        let mut logs = vec![stdout.to_path_buf()];
        if stderr != stdout {
            logs.push(stderr.to_path_buf());
        }
        ProcessGroup {
            name: name.to_owned(),
            child,
            logs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some` once the leader has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of each log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!("--- {} ({}) ---\n", self.name, log.display()));
            for line in &all[from..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Panics with the log tail if the process has died; for readiness loops.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "e2e: {} exited early ({status})\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }

    /// Sends `signal` to the leader only, as `docker stop` and ECS signal a container's
    /// PID 1; its children hear of it only through the leader.
    pub fn signal_leader(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -s {signal} {} failed",
            self.child.id()
        );
    }

    fn signal_group(&self, signal: &str) {
        // The group id is the leader's pid (process_group(0) above).
        let _ = Command::new("kill")
            .args(["-s", signal, "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(40));
        }
        // Ask nicely, give the leader a bounded moment, then kill whatever is left of the
        // group (workers can outlive their leader).
        self.signal_group("TERM");
        for _ in 0..100 {
            if self.exited().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group("KILL");
        let _ = self.child.wait();
    }
}
