//! How broker processes are run and signalled: the seam between the cluster logic and the
//! two ways of running a broker (a local JVM, or a Docker container).

use std::process::Output;
use std::time::Duration;

use crate::error::Result;
use crate::layout::Layout;

/// A signal-like action on one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// SIGKILL.
    Kill,
    /// SIGSTOP (freeze).
    Pause,
    /// SIGCONT (thaw).
    Resume,
}

/// Runs the brokers of one cluster.
pub(crate) trait BrokerProcesses: Send + Sync {
    /// Short name for messages ("local JVM", "Docker").
    fn kind(&self) -> &'static str;

    /// Once per cluster, before the first launch: format storage etc.
    fn prepare(&self, layout: &Layout) -> Result<()>;

    /// Starts broker `n` (it must not be running).
    fn launch(&self, layout: &Layout, n: usize) -> Result<()>;

    /// Sends SIGTERM and waits up to `timeout` for a clean exit, then kills it.
    fn stop(&self, n: usize, timeout: Duration) -> Result<()>;

    /// Applies `action` to broker `n`; a kill also waits until the process is gone.
    fn act(&self, n: usize, action: Action) -> Result<()>;

    /// `Some(description)` when broker `n` is known to have exited.
    fn exited(&self, n: usize) -> Option<String>;

    /// Kills every broker. With `blocking == false` it never waits on a lock held elsewhere
    /// (used from the process-exit hook, where another thread may be mid-operation).
    fn shutdown(&self, blocking: bool);

    /// The classpath of the Kafka jars, where there is one on this machine.
    fn classpath(&self) -> Option<&str>;

    /// Runs a Kafka Java tool's main class and returns its output.
    fn run_java_tool(
        &self,
        layout: &Layout,
        main_class: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output>;
}
