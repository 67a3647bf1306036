//! The iptables rules that steer a module's traffic into NFQUEUE. The appliance
//! owns one chain per family (`NETSERV` by default) and one ipset per family
//! (`NETSERV-4`, `NETSERV-6`, `hash:net,port`): created and flushed at
//! start-up (removing stale state of an earlier run), all removed on
//! shutdown. Rules use `--queue-bypass`, so packets flow unexamined whenever
//! no process listens on the queue.
//!
//! A filter by destination prefix and ports (the usual one) is an entry in
//! the family's set, and one rule per family sends whatever the set matches
//! to the queues: the kernel's cost per packet is one hash lookup whether
//! 1 or 1,000 tenants are installed — for intercepted traffic and for all
//! the other traffic the edge forwards. A filter that also names a source
//! prefix (which `hash:net,port` cannot hold) gets a rule of its own, as
//! does everything when the `ipset` tool is missing. Which module a packet
//! is for is the dataplane's business (`table::Table::candidates`): every
//! rule sends to the same queues.
//!
//! Module rules change through `iptables-restore --noflush` transactions:
//! a filter's rules (both directions of one that sees responses) go in
//! together or not at all, and a re-steered rule is swapped for its new
//! form in one step. Blocking (a child process each): the controller runs
//! these on its I/O thread (`controller::lane`), never on the runtime.

use super::table::Filter;
use crate::config::Steering;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};
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
    /// Whether filters go into ipsets (the `ipset` tool works here).
    sets: bool,
    /// Set entries in use, by (family binary, entry), with how many module
    /// filters need each (two tenants' modules may name the same one).
    entries: Arc<Mutex<HashMap<(&'static str, String), u32>>>,
}

const V4: &str = "iptables";
const V6: &str = "ip6tables";
const IPSET: &str = "ipset";

fn run(bin: &'static str, args: &[&str]) -> Result<(), IptablesError> {
    let mut cmd = Command::new(bin);
    if bin != IPSET {
        // `-w`: wait for the xtables lock instead of failing when another tool holds it.
        cmd.arg("-w");
    }
    let out = cmd.args(args).output().map_err(|source| IptablesError::Spawn { bin, source })?;
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

/// One `iptables-restore --noflush` transaction of `lines` (each an
/// operation and a rule, e.g. `-A NETSERV -p udp ...`): the kernel takes all
/// of them or none. Arguments are ours (names are checked where configured
/// or requested), but anything the restore format would read differently —
/// whitespace, quotes, comments — is refused here rather than written.
fn restore(bin: &'static str, lines: &[Vec<String>]) -> Result<(), IptablesError> {
    let restore_bin = if bin == V4 { "iptables-restore" } else { "ip6tables-restore" };
    let mut text = String::from("*filter\n");
    for line in lines {
        if let Some(bad) =
            line.iter().find(|a| a.is_empty() || a.bytes().any(|b| b.is_ascii_whitespace() || b"\"'#".contains(&b)))
        {
            return Err(IptablesError::Failed {
                bin: restore_bin,
                args: line.join(" "),
                stderr: format!("refused to write the argument {bad:?} into a restore file"),
            });
        }
        text.push_str(&line.join(" "));
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    let failed = |source| IptablesError::Spawn { bin: restore_bin, source };
    let mut child = Command::new(restore_bin)
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(failed)?;
    let written = child.stdin.take().map_or(Ok(()), |mut stdin| stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().map_err(failed)?;
    written.map_err(failed)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(IptablesError::Failed {
            bin: restore_bin,
            args: text.lines().skip(1).take(lines.len()).collect::<Vec<_>>().join("; "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// `op` and `rule` as one line of a restore transaction.
fn line(op: &str, rule: Vec<String>) -> Vec<String> {
    let mut l = Vec::with_capacity(rule.len() + 1);
    l.push(op.to_owned());
    l.extend(rule);
    l
}

impl Iptables {
    pub fn new(chain: &str, hooks: &[String], queue_base: u16, queues: u16, steering: Steering) -> Self {
        let steering = Arc::new(Mutex::new(steering));
        Self {
            chain: chain.to_owned(),
            hooks: hooks.to_vec(),
            queue_base,
            queues,
            steering,
            ipv6: false,
            sets: false,
            entries: Arc::default(),
        }
    }

    /// The ipset of a family.
    fn set_name(&self, bin: &'static str) -> String {
        format!("{}-{}", self.chain, if bin == V4 { "4" } else { "6" })
    }

    /// Creates or flushes the chain and hooks it in, once, for both families,
    /// and creates (or empties) the filter sets.
    pub fn setup(&mut self) -> Result<(), IptablesError> {
        self.setup_family(V4)?;
        match self.setup_family(V6) {
            Ok(()) => self.ipv6 = true,
            Err(e) => tracing::warn!(error = %e, "ip6tables unavailable; IPv6 modules will be refused"),
        }
        // The chain is flushed, so no rule holds the sets any more.
        let mut sets = Ok(());
        for (bin, family) in [(V4, "inet"), (V6, "inet6")] {
            if bin == V6 && !self.ipv6 {
                continue;
            }
            let name = self.set_name(bin);
            sets = sets
                .and_then(|()| run(IPSET, &["create", &name, "hash:net,port", "family", family, "-exist"]))
                .and_then(|()| run(IPSET, &["flush", &name]));
        }
        match sets {
            Ok(()) => self.sets = true,
            Err(e) => tracing::warn!(
                error = %e,
                "ipset unavailable: one iptables rule per module (the kernel's cost per packet grows with the modules installed)"
            ),
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

    /// Unhooks, flushes and deletes the chain in both families, then the
    /// sets. Best effort.
    pub fn teardown(&self) {
        for bin in [V4, V6] {
            for hook in &self.hooks {
                while run(bin, &["-D", hook, "-j", &self.chain]).is_ok() {}
            }
            let _ = run(bin, &["-F", &self.chain]);
            let _ = run(bin, &["-X", &self.chain]);
            if self.sets {
                let _ = run(IPSET, &["destroy", &self.set_name(bin)]);
            }
        }
        self.entries.lock().clear();
        tracing::info!(chain = %self.chain, "iptables rules removed");
    }

    /// The set entries of a filter (`net,proto:port`), or None when it needs
    /// a rule of its own.
    fn set_entries(&self, filter: &Filter) -> Option<Vec<String>> {
        // hash:net holds prefixes of length 1 and up, no source, one direction.
        if !self.sets || filter.source.is_some() || filter.responses || filter.destination.prefix_len() == 0 {
            return None;
        }
        let proto = filter.transport.as_str();
        // As the kernel stores it (host bits cleared), so that two filters
        // naming one prefix differently share one counted entry.
        let net = filter.destination.trunc();
        Some(filter.ports.iter().map(|p| format!("{net},{proto}:{p}")).collect())
    }

    /// The rule that sends what the family's set matches to the queues.
    fn set_rule(&self, bin: &'static str, steering: Steering) -> Vec<String> {
        let mut a = vec![
            self.chain.clone(),
            "-m".into(),
            "set".into(),
            "--match-set".into(),
            self.set_name(bin),
            "dst,dst".into(),
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            "netserv:modules".into(),
            "-j".into(),
            "NFQUEUE".into(),
        ];
        a.extend(self.queue_target(steering));
        a
    }

    fn set_rule_edit(&self, op: &str, bin: &'static str, steering: Steering) -> Result<(), IptablesError> {
        restore(bin, &[line(op, self.set_rule(bin, steering))])
    }

    /// Whether any entry of the family is in use (its set rule is in place).
    fn family_in_use(entries: &HashMap<(&'static str, String), u32>, bin: &'static str) -> bool {
        entries.keys().any(|(b, _)| *b == bin)
    }

    /// The filter's rule; `responses`: its mirror, for the servers' answers.
    fn rule(&self, filter: &Filter, id: &str, steering: Steering, responses: bool) -> Vec<String> {
        let (to, from, ports_flag) = if responses { ("-s", "-d", "--sports") } else { ("-d", "-s", "--dports") };
        let mut a = vec![
            self.chain.clone(),
            "-p".into(),
            filter.transport.as_str().into(),
            to.into(),
            filter.destination.to_string(),
        ];
        if let Some(src) = filter.source {
            a.extend([from.into(), src.to_string()]);
        }
        let ports: Vec<String> = filter.ports.iter().map(u16::to_string).collect();
        a.extend(["-m".into(), "multiport".into(), ports_flag.into(), ports.join(",")]);
        a.extend(["-m".into(), "comment".into(), "--comment".into(), format!("netserv:{id}")]);
        a.extend(["-j".into(), "NFQUEUE".into()]);
        a.extend(self.queue_target(steering));
        a
    }

    /// The NFQUEUE target's options: which queues, how spread.
    fn queue_target(&self, steering: Steering) -> Vec<String> {
        let mut a = Vec::new();
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
        let rule = |bin| {
            let args = ["-A", &self.chain, "-p", "udp", "--dport", "270", "-m", "comment", "--comment"];
            let mut l: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            l.extend(["netserv:signaling", "-j", "NFQUEUE", "--queue-num"].map(str::to_owned));
            l.extend([queue.to_string(), "--queue-bypass".to_owned()]);
            restore(bin, &[l])
        };
        // Only FORWARD-hooked traffic is in transit; the rule lives in the
        // node's chain, which FORWARD jumps to.
        rule(V4)?;
        if self.ipv6 {
            rule(V6)?;
        }
        Ok(())
    }

    /// A module's rules (one per direction it sees) as written with `steering`.
    fn rules_of(&self, filter: &Filter, id: &str, steering: Steering) -> Vec<Vec<String>> {
        let directions: &[bool] = if filter.responses { &[false, true] } else { &[false] };
        directions.iter().map(|&responses| self.rule(filter, id, steering, responses)).collect()
    }

    /// Appends (`-A`, all of a module's rules or none) or deletes (`-D`,
    /// each rule on its own: what can go, goes) a module's rules.
    fn edit(&self, op: &str, filter: &Filter, id: &str, steering: Steering) -> Result<(), IptablesError> {
        let bin = self.bin_for(filter)?;
        let lines: Vec<Vec<String>> = self.rules_of(filter, id, steering).into_iter().map(|r| line(op, r)).collect();
        if op == "-A" {
            return restore(bin, &lines);
        }
        let mut first_error = None;
        for l in lines {
            if let Err(e) = restore(bin, &[l]) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Steers a module's filter to the queues: its set entries (and the
    /// family's set rule with the first of them), or a rule of its own.
    pub fn add(&self, filter: &Filter, id: &str) -> Result<(), IptablesError> {
        let Some(wanted) = self.set_entries(filter) else {
            return self.edit("-A", filter, id, self.steering());
        };
        let bin = self.bin_for(filter)?;
        let steering = self.steering.lock();
        let mut entries = self.entries.lock();
        let mut added: Vec<String> = Vec::new();
        let result = (|| {
            for e in &wanted {
                let key = (bin, e.clone());
                if let Some(n) = entries.get_mut(&key) {
                    *n += 1;
                } else {
                    run(IPSET, &["add", &self.set_name(bin), e, "-exist"])?;
                    if !Self::family_in_use(&entries, bin)
                        && let Err(err) = self.set_rule_edit("-A", bin, *steering)
                    {
                        let _ = run(IPSET, &["del", &self.set_name(bin), e, "-exist"]);
                        return Err(err);
                    }
                    entries.insert(key, 1);
                }
                added.push(e.clone());
            }
            Ok(())
        })();
        if result.is_err() {
            // A failed add changes nothing.
            drop(entries);
            drop(steering);
            let _ = self.release(bin, &added);
        }
        result
    }

    /// Undoes [`Iptables::add`] for the same filter.
    pub fn remove(&self, filter: &Filter, id: &str) -> Result<(), IptablesError> {
        let Some(entries) = self.set_entries(filter) else {
            return self.edit("-D", filter, id, self.steering());
        };
        let bin = self.bin_for(filter)?;
        self.release(bin, &entries)
    }

    /// Drops one use of each entry; an entry no filter needs leaves the set,
    /// and the set rule goes with the family's last entry.
    fn release(&self, bin: &'static str, release: &[String]) -> Result<(), IptablesError> {
        let steering = self.steering.lock();
        let mut entries = self.entries.lock();
        let mut first_error = None;
        for e in release {
            let key = (bin, e.clone());
            let Some(n) = entries.get_mut(&key) else { continue };
            *n -= 1;
            if *n > 0 {
                continue;
            }
            entries.remove(&key);
            if let Err(err) = run(IPSET, &["del", &self.set_name(bin), e, "-exist"]) {
                first_error.get_or_insert(err);
            }
            if !Self::family_in_use(&entries, bin)
                && let Err(err) = self.set_rule_edit("-D", bin, *steering)
            {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The steering module rules use now.
    pub fn steering(&self) -> Steering {
        *self.steering.lock()
    }

    /// Rewrites the given module rules with another steering: each module's
    /// rules are swapped for their new form in one transaction, so no packet
    /// passes unexamined. The caller holds the controller's lock, so no rule
    /// changes meanwhile.
    pub fn resteer<'a>(
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
        for (filter, id) in rules.into_iter().filter(|(f, _)| self.set_entries(f).is_none()) {
            let swap = self.bin_for(filter).and_then(|bin| {
                let add: Vec<Vec<String>> = self.rules_of(filter, id, to).into_iter().map(|r| line("-A", r)).collect();
                let mut lines = add.clone();
                lines.extend(self.rules_of(filter, id, from).into_iter().map(|r| line("-D", r)));
                // The old form missing (taken out by hand) fails the swap:
                // the new form goes in alone, so the module stays steered.
                restore(bin, &lines).or_else(|e| restore(bin, &add).and(Err(e)))
            });
            if let Err(e) = swap {
                first_error.get_or_insert(e);
            }
        }
        let entries = self.entries.lock();
        for bin in [V4, V6].into_iter().filter(|b| Self::family_in_use(&entries, b)) {
            let swap = [line("-A", self.set_rule(bin, to)), line("-D", self.set_rule(bin, from))];
            if let Err(e) = restore(bin, &swap) {
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
    use crate::dataplane::Transport;

    fn filter() -> Filter {
        Filter {
            transport: Transport::Udp,
            destination: "198.18.2.20/32".parse().expect("prefix"),
            ports: vec![5060, 5061],
            source: None,
            responses: false,
        }
    }

    fn target(ipt: &Iptables) -> String {
        let rule = ipt.rule(&filter(), "itsp-a/keepalive", ipt.steering(), false).join(" ");
        rule.split_once("-j NFQUEUE ").map(|(_, t)| t.to_owned()).expect("an NFQUEUE target")
    }

    #[test]
    fn module_rules_match_the_filter_and_name_the_module() {
        let ipt = Iptables::new("NETSERV", &["FORWARD".into()], 270, 2, Steering::Cpu);
        assert_eq!(
            ipt.rule(&filter(), "itsp-a/keepalive", ipt.steering(), false).join(" "),
            "NETSERV -p udp -d 198.18.2.20/32 -m multiport --dports 5060,5061 -m comment --comment \
             netserv:itsp-a/keepalive -j NFQUEUE --queue-balance 270:271 --queue-cpu-fanout --queue-bypass"
        );
        // A filter that sees responses has a mirror rule, from the servers' ports.
        let both = Filter { responses: true, source: Some("198.18.1.0/24".parse().expect("prefix")), ..filter() };
        assert_eq!(
            ipt.rule(&both, "itsp-a/overload", ipt.steering(), true).join(" "),
            "NETSERV -p udp -s 198.18.2.20/32 -d 198.18.1.0/24 -m multiport --sports 5060,5061 -m comment --comment \
             netserv:itsp-a/overload -j NFQUEUE --queue-balance 270:271 --queue-cpu-fanout --queue-bypass"
        );
        let mut with_sets = Iptables::new("NETSERV", &["FORWARD".into()], 270, 2, Steering::Cpu);
        with_sets.sets = true;
        assert_eq!(with_sets.set_entries(&Filter { responses: true, ..filter() }), None, "responses need rules");
    }

    #[test]
    fn destination_filters_are_set_entries_and_source_filters_rules() {
        let mut ipt = Iptables::new("NETSERV", &["FORWARD".into()], 270, 2, Steering::Cpu);
        assert_eq!(ipt.set_entries(&filter()), None, "no sets: rules");
        ipt.sets = true;
        assert_eq!(
            ipt.set_entries(&filter()),
            Some(vec!["198.18.2.20/32,udp:5060".to_owned(), "198.18.2.20/32,udp:5061".to_owned()])
        );
        let with_source = Filter { source: Some("198.18.1.0/24".parse().expect("prefix")), ..filter() };
        assert_eq!(ipt.set_entries(&with_source), None);
        let loose = Filter { destination: "198.18.2.21/24".parse().expect("prefix"), ports: vec![5060], ..filter() };
        assert_eq!(ipt.set_entries(&loose), Some(vec!["198.18.2.0/24,udp:5060".to_owned()]), "host bits cleared");
        let everything = Filter { destination: "0.0.0.0/0".parse().expect("prefix"), ..filter() };
        assert_eq!(ipt.set_entries(&everything), None, "hash:net cannot hold /0");
        assert_eq!(
            ipt.set_rule(V4, Steering::Flow).join(" "),
            "NETSERV -m set --match-set NETSERV-4 dst,dst -m comment --comment netserv:modules -j NFQUEUE \
             --queue-balance 270:271 --queue-bypass"
        );
        assert_eq!(ipt.set_name(V6), "NETSERV-6");
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
