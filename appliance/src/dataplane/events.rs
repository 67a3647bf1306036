//! What a worker hands its instances between batches: load reports from
//! the feedback API and timers that are due. Pure like `pipeline`: the
//! worker calls [`WorkerModules::deliver_events`] before each batch and
//! when its receive times out with nothing (at least every 100 ms).
//!
//! These calls are guarded as packets are: the module's CPU budget pays
//! for them, a fault rebuilds the instance, a quarantined module gets
//! nothing. A throttled module's reports wait for its next window (they are
//! not lost); its due timers wait too.

use super::guard::Admit;
use super::local::WorkerModules;
use super::pipeline::{admit, charge};
use crate::runtime::LoadReport;
use std::time::Instant;

/// Reusable room for one delivery.
#[derive(Debug, Default)]
pub struct EventBuffers {
    reports: Vec<LoadReport>,
    timers: Vec<u32>,
}

impl WorkerModules {
    /// Feedback and due timers to this worker's instances, at `now`.
    pub fn deliver_events(&mut self, now: Instant, bufs: &mut EventBuffers) {
        let WorkerModules { worker, locals, builder, preempted, .. } = self;
        for local in locals.iter_mut() {
            let generation = local.module.feedback.generation();
            let timer_due = local.instance.as_ref().and_then(|i| i.next_timer()).is_some_and(|t| t <= now);
            if generation == local.feedback_seen && !timer_due || local.module.is_quarantined() {
                continue;
            }
            let mut parts = local.parts();
            if admit(&mut parts, *worker, now) != Admit::Run {
                continue;
            }
            if parts.instance(*worker, builder.as_ref(), now).is_none() {
                continue;
            }
            // Reports first: a timer may act on what they say.
            if generation != *parts.feedback_seen {
                *parts.feedback_seen = parts.module.feedback.since(*parts.feedback_seen, now, &mut bufs.reports);
                for report in bufs.reports.drain(..) {
                    let t0 = Instant::now();
                    let Some(instance) = parts.instance.as_mut() else { return };
                    let result = instance.on_feedback(report);
                    if charge(&mut parts, *worker, builder.as_ref(), *preempted, t0, result).is_none() {
                        break;
                    }
                }
            }
            let Some(instance) = parts.instance.as_mut() else { continue };
            instance.take_due_timers(now, &mut bufs.timers);
            for &id in &bufs.timers {
                let t0 = Instant::now();
                let Some(instance) = parts.instance.as_mut() else { break };
                let result = instance.on_timer(id);
                if charge(&mut parts, *worker, builder.as_ref(), *preempted, t0, result).is_none() {
                    break;
                }
            }
        }
    }
}
