//! A CPU cap for a real overload: a cgroup v1 `cpu` group with a CFS quota
//! (DESIGN.md §5: the v1 `cpu` controller is mounted on these machines), so
//! that a SIP server's capacity is a few hundred requests a second. The
//! group is removed on drop, its processes moved back to the root group
//! first, even when the test fails.

use anyhow::Context as _;
use std::path::PathBuf;

const ROOT: &str = "/sys/fs/cgroup/cpu";

pub struct CpuCap {
    dir: PathBuf,
}

impl CpuCap {
    /// A group allowed `percent` of one CPU, in periods as short as the
    /// kernel allows (a quota is at least 1 ms; a long period makes the
    /// server stall for most of it, which loses bursts instead of
    /// throttling its throughput).
    pub fn new(tag: &str, percent: u32) -> anyhow::Result<Self> {
        let dir = PathBuf::from(ROOT).join(format!("netserv-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {} (cgroup v1 cpu, as root)", dir.display()))?;
        let me = Self { dir };
        let percent = percent.clamp(1, 100);
        let quota = (percent * 100).max(1000);
        std::fs::write(me.dir.join("cpu.cfs_period_us"), (quota * 100 / percent).to_string())?;
        std::fs::write(me.dir.join("cpu.cfs_quota_us"), quota.to_string())?;
        Ok(me)
    }

    /// Moves every process whose command line contains `pattern` into the
    /// group; how many it moved.
    pub fn add_matching(&self, pattern: &str) -> anyhow::Result<usize> {
        let out = std::process::Command::new("pgrep").args(["-f", pattern]).output().context("pgrep")?;
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();
        for pid in &pids {
            // A process may have exited meanwhile: skip it.
            let _ = std::fs::write(self.dir.join("cgroup.procs"), pid);
        }
        Ok(pids.len())
    }

    /// Pins every thread of the group's processes to CPU `cpu` (a server
    /// with a CPU of its own, as on a box of its own: its capacity then does
    /// not depend on what the rest of the testbed makes the machine do).
    pub fn pin(&self, cpu: usize) -> anyhow::Result<()> {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs"))?;
        for pid in procs.split_whitespace() {
            // A process may have exited meanwhile: skip it.
            let _ = std::process::Command::new("taskset")
                .args(["-a", "-p", "-c", &cpu.to_string(), pid])
                .stdout(std::process::Stdio::null())
                .status();
        }
        Ok(())
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = std::fs::write(PathBuf::from(ROOT).join("cgroup.procs"), pid);
        }
        // A process that is still exiting keeps the group busy for a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
