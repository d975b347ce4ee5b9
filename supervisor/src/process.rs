//! Exec mode: the supervisor starts the server as its child, so it sees the exit at once
//! (waitpid) instead of after `failure_threshold` failed probes.

use std::process::ExitStatus;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;

/// Why the server process could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("signalling the server: {0}")]
    Signal(#[from] nix::Error),
    #[error("no server command given")]
    Empty,
}

/// The server child process; a new one after each [`ServerProcess::restart`].
pub struct ServerProcess {
    argv: Vec<String>,
    pid: Option<Pid>,
    /// `Some(status)` once the current child has exited.
    exit: watch::Receiver<Option<String>>,
}

impl ServerProcess {
    /// Starts `argv[0]` with the remaining arguments.
    ///
    /// # Errors
    /// The program could not be started.
    pub fn spawn(argv: Vec<String>) -> Result<ServerProcess, ProcessError> {
        let mut p = ServerProcess { argv, pid: None, exit: watch::channel(None).1 };
        p.restart()?;
        Ok(p)
    }

    /// Starts the server again (after it exited).
    ///
    /// # Errors
    /// The program could not be started.
    pub fn restart(&mut self) -> Result<(), ProcessError> {
        let (program, args) = self.argv.split_first().ok_or(ProcessError::Empty)?;
        let mut child = Command::new(program)
            .args(args)
            // zeo-server exits with us (PR_SET_PDEATHSIG), even when we are SIGKILLed.
            .env("ZEO_EXIT_WITH_PARENT", std::process::id().to_string())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcessError::Spawn { program: program.clone(), source })?;
        self.pid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
        let (tx, rx) = watch::channel(None);
        self.exit = rx;
        tracing::info!(pid = ?self.pid, program, "server started");
        tokio::spawn(async move {
            let status = child.wait().await;
            let text = status.as_ref().map(ExitStatus::to_string).unwrap_or_else(|e| e.to_string());
            tracing::warn!(status = %text, "server exited");
            let _ = tx.send(Some(text));
        });
        Ok(())
    }

    pub fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Resolves when the current child exits (at once if it already has).
    pub async fn wait_exit(&mut self) {
        let _ = self.exit.wait_for(Option::is_some).await;
    }

    /// SIGKILL: the fence of last resort, when a demotion was not confirmed in time.
    ///
    /// # Errors
    /// The signal could not be sent (other than the process being gone already).
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.signal(Signal::SIGKILL)
    }

    /// SIGTERM, for the supervisor's own shutdown.
    ///
    /// # Errors
    /// As [`ServerProcess::kill`].
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.signal(Signal::SIGTERM)
    }

    fn signal(&self, sig: Signal) -> Result<(), ProcessError> {
        match self.pid {
            Some(pid) if !self.exited() => match kill(pid, sig) {
                Err(nix::Error::ESRCH) => Ok(()),
                other => Ok(other?),
            },
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sees_the_exit_of_a_killed_child_and_restarts_it() {
        let mut p = ServerProcess::spawn(vec!["sleep".into(), "600".into()]).unwrap();
        assert!(!p.exited());
        p.kill().unwrap();
        p.wait_exit().await;
        assert!(p.exited());
        p.restart().unwrap();
        assert!(!p.exited());
        p.terminate().unwrap();
        p.wait_exit().await;
    }
}
