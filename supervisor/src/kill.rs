//! The last-resort fence for a server that is not our child (exec mode has
//! [`crate::process::ServerProcess::kill`]): a command (`--kill-command`), or SIGKILL of the
//! server's container through the Docker engine API (`--kill-container`), for images that have no
//! docker CLI.

/// How to kill the server.
pub enum ServerKiller {
    /// A command (argv) that kills it; success is exit status 0.
    Command(Vec<String>),
    /// SIGKILL of this container.
    #[cfg(feature = "docker")]
    Container { docker: bollard::Docker, name: String },
}

impl ServerKiller {
    /// Kills the server; `Ok` once it is known not to run.
    ///
    /// # Errors
    /// The command failed, or the engine refused or could not be reached (a sentence to log).
    pub async fn kill(&self) -> Result<(), String> {
        match self {
            ServerKiller::Command(argv) => {
                let (program, args) = argv.split_first().ok_or("empty kill command")?;
                let out = tokio::process::Command::new(program)
                    .args(args)
                    .output()
                    .await
                    .map_err(|e| format!("{argv:?}: {e}"))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!("{argv:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
                }
            }
            #[cfg(feature = "docker")]
            ServerKiller::Container { docker, name } => {
                let options = bollard::query_parameters::KillContainerOptions { signal: "SIGKILL".into() };
                match docker.kill_container(name, Some(options)).await {
                    Err(e) if !not_running(&e) => Err(format!("killing container {name}: {e}")),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// The engine answers 409 "Container ... is not running": the wanted state already holds (a
/// crashed server is fenced). A missing container (404) stays an error: a wrong name would make
/// every fence look successful.
#[cfg(feature = "docker")]
fn not_running(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
        if message.contains("is not running"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_succeeds_or_says_why_not() {
        assert_eq!(ServerKiller::Command(vec!["true".into()]).kill().await, Ok(()));
        let err = ServerKiller::Command(vec!["sh".into(), "-c".into(), "echo nope >&2; exit 1".into()])
            .kill()
            .await
            .unwrap_err();
        assert!(err.contains("nope"), "{err}");
        assert!(ServerKiller::Command(Vec::new()).kill().await.is_err());
    }

    #[cfg(feature = "docker")]
    #[test]
    fn only_a_stopped_container_counts_as_killed() {
        use bollard::errors::Error;
        let stopped = Error::DockerResponseServerError {
            status_code: 409,
            message: "Cannot kill container: server-a: Container 3f2c is not running".into(),
        };
        let missing =
            Error::DockerResponseServerError { status_code: 404, message: "No such container: server-x".into() };
        let paused = Error::DockerResponseServerError {
            status_code: 409,
            message: "Cannot kill container: server-a: Container 3f2c is paused. Unpause the container".into(),
        };
        assert!(not_running(&stopped));
        assert!(!not_running(&missing) && !not_running(&paused));
    }
}
