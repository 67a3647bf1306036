//! A thread of the controller's own for its blocking work — iptables
//! transactions (a child process each) and state writes (an fsync each) —
//! so that the async runtime's threads, which also serve the API and the
//! signaling, never wait on them. Jobs run one at a time in the order they
//! were given: the rules and the saved state change in the order the
//! controller decided the changes (it gives them under its records lock).

use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, thiserror::Error)]
#[error("the controller's I/O thread failed a job (it panicked); see the log")]
pub struct LaneError;

#[derive(Debug)]
pub struct Lane {
    jobs: mpsc::Sender<Job>,
}

impl Lane {
    pub fn spawn(name: &str) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            for job in rx {
                // A job that panics loses its answer (its caller gets a
                // LaneError), not the thread every later job needs.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a controller I/O job panicked");
                }
            }
        })?;
        Ok(Self { jobs })
    }

    /// Runs `job` on the lane after every job given before it, and waits
    /// for its result without holding a runtime thread.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, LaneError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(job());
            }))
            .map_err(|_| LaneError)?;
        rx.await.map_err(|_| LaneError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_run_in_order_off_the_runtime_and_survive_a_panic() {
        let lane = Lane::spawn("test-lane").expect("spawn");
        let runtime_thread = std::thread::current().id();
        let order = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (a, b) = (order.clone(), order.clone());
        let first = lane.run(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            a.lock().push(1);
            std::thread::current().id()
        });
        let second = lane.run(move || b.lock().push(2));
        // Both given before either is done.
        let (ran_on, done) = tokio::join!(first, second);
        let (ran_on, ()) = (ran_on.expect("first"), done.expect("second"));
        assert_ne!(ran_on, runtime_thread, "the job ran on the lane's thread");
        assert_eq!(*order.lock(), [1, 2]);
        assert!(lane.run(|| panic!("a failing job")).await.is_err());
        assert_eq!(lane.run(|| 7).await.expect("the lane goes on"), 7);
    }
}
