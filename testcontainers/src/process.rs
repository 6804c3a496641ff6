//! Child processes that die with the test process: a long-lived spawner thread plus
//! `PR_SET_PDEATHSIG`.
//!
//! # Invariants
//! - Linux delivers the parent-death signal when the *thread* that forked the child exits,
//!   not when the process does. So every child is forked by one dedicated thread that never
//!   returns; a child spawned from a short-lived test thread would be killed when that test
//!   ends, or (without the flag) outlive a killed test binary.
//! - The child resets its signal mask: the `up` binary blocks SIGINT/SIGTERM to `sigwait`
//!   for them, and a blocked mask survives `execve`, which would make a broker deaf to
//!   `stop_broker`'s SIGTERM.

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Request = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from the spawner thread so that the child gets SIGKILL when this process dies.
pub(crate) fn spawn(mut cmd: Command) -> io::Result<Child> {
    install_death_signal(&mut cmd);
    let (reply_tx, reply_rx) = mpsc::channel();
    let sender = spawner()
        .lock()
        .map_err(|_| io::Error::other("spawner lock poisoned"))?
        .clone();
    sender
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread dropped the request"))?
}

fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        // The thread is never joined and `rx.recv()` never fails because the sender lives in
        // this static: the thread lives exactly as long as the process.
        std::thread::Builder::new()
            .name("flumen-kafka-spawner".into())
            .spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| panic!("cannot start the process spawner thread: {e}"));
        Mutex::new(tx)
    })
}

fn install_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid is async-signal-safe; called before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: between fork and exec only async-signal-safe calls are made (prctl, getppid,
    // sigemptyset, sigprocmask, _exit); nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            // Only Linux has a parent-death signal; elsewhere the exit hook, `Drop` and the
            // temp-dir sweep are all there is.
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect: then nobody will signal us.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            #[cfg(not(target_os = "linux"))]
            let _ = parent;
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Sends `signal` to process `pid`; a process that is already gone is not an error.
pub(crate) fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: plain syscall on a pid we spawned and have not reaped yet.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// True when a process with this pid exists (used to find leftovers of dead test runs).
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
