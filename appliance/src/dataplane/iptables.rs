//! The iptables rules that steer a module's traffic into NFQUEUE. The appliance
//! owns one chain per family (`NETSERV` by default): created and flushed at
//! start-up (removing stale rules of an earlier run), one rule per installed
//! module, all removed on shutdown. Rules use `--queue-bypass`, so packets flow
//! unexamined whenever no process listens on the queue.

use super::table::Filter;
use crate::config::Steering;
use crate::runtime::Transport;
use parking_lot::Mutex;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("running {bin}: {source}")]
    Spawn { bin: &'static str, source: std::io::Error },
    #[error("{bin} {args}: {stderr}")]
    Failed { bin: &'static str, args: String, stderr: String },
    #[error("IPv6 filtering is unavailable on this node (ip6tables failed at start-up)")]
    NoIpv6,
}

#[derive(Debug, Clone)]
pub struct Iptables {
    chain: String,
    hooks: Vec<String>,
    queue_base: u16,
    queues: u16,
    /// The steering module rules are written with now; CPU steering falls
    /// back to flow hashing while a worker's home CPU is overloaded.
    steering: Arc<Mutex<Steering>>,
    ipv6: bool,
}

const V4: &str = "iptables";
const V6: &str = "ip6tables";

fn run(bin: &'static str, args: &[&str]) -> Result<(), IptablesError> {
    // `-w`: wait for the xtables lock instead of failing when another tool holds it.
    let out = Command::new(bin).arg("-w").args(args).output().map_err(|source| IptablesError::Spawn { bin, source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(IptablesError::Failed {
            bin,
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

impl Iptables {
    pub fn new(chain: &str, hooks: &[String], queue_base: u16, queues: u16, steering: Steering) -> Self {
        let steering = Arc::new(Mutex::new(steering));
        Self { chain: chain.to_owned(), hooks: hooks.to_vec(), queue_base, queues, steering, ipv6: false }
    }

    /// Creates or flushes the chain and hooks it in, once, for both families.
    pub fn setup(&mut self) -> Result<(), IptablesError> {
        self.setup_family(V4)?;
        match self.setup_family(V6) {
            Ok(()) => self.ipv6 = true,
            Err(e) => tracing::warn!(error = %e, "ip6tables unavailable; IPv6 modules will be refused"),
        }
        Ok(())
    }

    fn setup_family(&self, bin: &'static str) -> Result<(), IptablesError> {
        let chain = self.chain.as_str();
        if run(bin, &["-N", chain]).is_err() {
            // It exists from an earlier run: its rules are stale.
            run(bin, &["-F", chain])?;
            tracing::info!(bin, chain, "flushed stale rules from an earlier run");
        }
        for hook in &self.hooks {
            while run(bin, &["-D", hook, "-j", chain]).is_ok() {}
            run(bin, &["-I", hook, "-j", chain])?;
        }
        Ok(())
    }

    /// Unhooks, flushes and deletes the chain in both families. Best effort.
    pub fn teardown(&self) {
        for bin in [V4, V6] {
            for hook in &self.hooks {
                while run(bin, &["-D", hook, "-j", &self.chain]).is_ok() {}
            }
            let _ = run(bin, &["-F", &self.chain]);
            let _ = run(bin, &["-X", &self.chain]);
        }
        tracing::info!(chain = %self.chain, "iptables rules removed");
    }

    fn rule(&self, filter: &Filter, id: &str, steering: Steering) -> Vec<String> {
        let mut a = vec![
            self.chain.clone(),
            "-p".into(),
            match filter.transport {
                Transport::Udp => "udp".into(),
                Transport::Tcp => "tcp".into(),
            },
            "-d".into(),
            filter.destination.to_string(),
        ];
        if let Some(src) = filter.source {
            a.extend(["-s".into(), src.to_string()]);
        }
        let ports: Vec<String> = filter.ports.iter().map(u16::to_string).collect();
        a.extend(["-m".into(), "multiport".into(), "--dports".into(), ports.join(",")]);
        a.extend(["-m".into(), "comment".into(), "--comment".into(), format!("netserv:{id}")]);
        a.extend(["-j".into(), "NFQUEUE".into()]);
        if self.queues > 1 {
            let last = self.queue_base + self.queues - 1;
            a.extend(["--queue-balance".into(), format!("{}:{last}", self.queue_base)]);
            if steering == Steering::Cpu {
                // Queue = base + (processing CPU % queues): see placement.rs.
                a.push("--queue-cpu-fanout".into());
            }
        } else {
            a.extend(["--queue-num".into(), self.queue_base.to_string()]);
        }
        a.push("--queue-bypass".into());
        a
    }

    fn bin_for(&self, filter: &Filter) -> Result<&'static str, IptablesError> {
        match filter.destination.addr() {
            IpAddr::V4(_) => Ok(V4),
            IpAddr::V6(_) if self.ipv6 => Ok(V6),
            IpAddr::V6(_) => Err(IptablesError::NoIpv6),
        }
    }

    /// Steers GIST datagrams in transit (UDP 270, IPv4 and IPv6) to the
    /// signaling queue. Forwarded traffic only: messages addressed to this
    /// node reach its socket, and those it sends are never intercepted by it.
    /// Removed with the chain.
    pub fn add_signaling(&self, queue: u16) -> Result<(), IptablesError> {
        let q = queue.to_string();
        let rule = |bin| {
            run(
                bin,
                &[
                    "-A",
                    &self.chain,
                    "-p",
                    "udp",
                    "--dport",
                    "270",
                    "-m",
                    "comment",
                    "--comment",
                    "netserv:signaling",
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    &q,
                    "--queue-bypass",
                ],
            )
        };
        // Only FORWARD-hooked traffic is in transit; the rule lives in the
        // node's chain, which FORWARD jumps to.
        rule(V4)?;
        if self.ipv6 {
            rule(V6)?;
        }
        Ok(())
    }

    /// Appends (`-A`) or deletes (`-D`) a module's rule as written with `steering`.
    fn edit(&self, op: &str, filter: &Filter, id: &str, steering: Steering) -> Result<(), IptablesError> {
        let bin = self.bin_for(filter)?;
        let rule = self.rule(filter, id, steering);
        let mut args: Vec<&str> = vec![op];
        args.extend(rule.iter().map(String::as_str));
        run(bin, &args)
    }

    pub fn add(&self, filter: &Filter, id: &str) -> Result<(), IptablesError> {
        self.edit("-A", filter, id, self.steering())
    }

    pub fn remove(&self, filter: &Filter, id: &str) -> Result<(), IptablesError> {
        self.edit("-D", filter, id, self.steering())
    }

    /// The steering module rules use now.
    pub fn steering(&self) -> Steering {
        *self.steering.lock()
    }

    /// Rewrites the given module rules with another steering: each new rule
    /// goes in before its old one comes out, so no packet passes unexamined.
    /// The caller holds the controller's lock, so no rule changes meanwhile.
    pub fn restyle<'a>(
        &self,
        to: Steering,
        rules: impl IntoIterator<Item = (&'a Filter, &'a str)>,
    ) -> Result<(), IptablesError> {
        let mut current = self.steering.lock();
        let from = *current;
        if from == to {
            return Ok(());
        }
        let mut first_error = None;
        for (filter, id) in rules {
            if let Err(e) = self.edit("-A", filter, id, to).and_then(|()| self.edit("-D", filter, id, from)) {
                first_error.get_or_insert(e);
            }
        }
        *current = to;
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> Filter {
        Filter {
            transport: Transport::Udp,
            destination: "198.18.2.20/32".parse().expect("prefix"),
            ports: vec![5060, 5061],
            source: None,
        }
    }

    fn target(ipt: &Iptables) -> String {
        let rule = ipt.rule(&filter(), "itsp-a/keepalive", ipt.steering()).join(" ");
        rule.split_once("-j NFQUEUE ").map(|(_, t)| t.to_owned()).expect("an NFQUEUE target")
    }

    #[test]
    fn module_rules_match_the_filter_and_name_the_module() {
        let ipt = Iptables::new("NETSERV", &["FORWARD".into()], 270, 2, Steering::Cpu);
        assert_eq!(
            ipt.rule(&filter(), "itsp-a/keepalive", ipt.steering()).join(" "),
            "NETSERV -p udp -d 198.18.2.20/32 -m multiport --dports 5060,5061 -m comment --comment \
             netserv:itsp-a/keepalive -j NFQUEUE --queue-balance 270:271 --queue-cpu-fanout --queue-bypass"
        );
    }

    #[test]
    fn steering_picks_the_queue_selection() {
        let hooks = ["FORWARD".to_owned()];
        assert_eq!(
            target(&Iptables::new("N", &hooks, 270, 4, Steering::Cpu)),
            "--queue-balance 270:273 --queue-cpu-fanout --queue-bypass"
        );
        assert_eq!(
            target(&Iptables::new("N", &hooks, 270, 4, Steering::Flow)),
            "--queue-balance 270:273 --queue-bypass"
        );
        // One queue: nothing to spread, whatever the steering.
        assert_eq!(target(&Iptables::new("N", &hooks, 300, 1, Steering::Cpu)), "--queue-num 300 --queue-bypass");
    }
}
