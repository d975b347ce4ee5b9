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

/// Why the server could not be killed (or the killer not set up).
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("empty kill command")]
    EmptyCommand,
    #[error("{argv:?}: {source}")]
    Spawn {
        argv: Vec<String>,
        #[source]
        source: std::io::Error,
    },
    /// The command ran and failed; its stderr.
    #[error("{argv:?}: {stderr}")]
    Failed { argv: Vec<String>, stderr: String },
    #[cfg(feature = "docker")]
    #[error("killing container {name}: {source}")]
    Container {
        name: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The Docker engine does not answer (setting up `--kill-container`).
    #[cfg(feature = "docker")]
    #[error("Docker engine")]
    Engine(#[source] bollard::errors::Error),
}

impl ServerKiller {
    /// The killer of `--kill-command` (argv) or `--kill-container` (at most one is given: the
    /// configuration's rule), `None` without either.
    ///
    /// # Errors
    /// The Docker engine cannot be reached.
    pub async fn from_settings(
        command: Option<&[String]>,
        container: Option<&str>,
    ) -> Result<Option<ServerKiller>, KillError> {
        if let Some(argv) = command {
            return Ok(Some(ServerKiller::Command(argv.to_vec())));
        }
        #[cfg(feature = "docker")]
        if let Some(name) = container {
            let docker = crate::mover::docker::connect().await.map_err(KillError::Engine)?;
            return Ok(Some(ServerKiller::Container { docker, name: name.into() }));
        }
        #[cfg(not(feature = "docker"))]
        let _ = container;
        Ok(None)
    }

    /// Kills the server; `Ok` once it is known not to run.
    ///
    /// # Errors
    /// The command failed, or the engine refused or could not be reached.
    pub async fn kill(&self) -> Result<(), KillError> {
        match self {
            ServerKiller::Command(argv) => {
                let (program, args) = argv.split_first().ok_or(KillError::EmptyCommand)?;
                let out = tokio::process::Command::new(program)
                    .args(args)
                    .output()
                    .await
                    .map_err(|source| KillError::Spawn { argv: argv.clone(), source })?;
                if out.status.success() {
                    Ok(())
                } else {
                    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    Err(KillError::Failed { argv: argv.clone(), stderr })
                }
            }
            #[cfg(feature = "docker")]
            ServerKiller::Container { docker, name } => {
                let options = bollard::query_parameters::KillContainerOptions { signal: "SIGKILL".into() };
                match docker.kill_container(name, Some(options)).await {
                    Err(source) if !not_running(&source) => Err(KillError::Container { name: name.clone(), source }),
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
        ServerKiller::Command(vec!["true".into()]).kill().await.unwrap();
        let err = ServerKiller::Command(vec!["sh".into(), "-c".into(), "echo nope >&2; exit 1".into()])
            .kill()
            .await
            .unwrap_err();
        assert!(matches!(&err, KillError::Failed { stderr, .. } if stderr == "nope"), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(matches!(ServerKiller::Command(Vec::new()).kill().await, Err(KillError::EmptyCommand)));
        let missing = ServerKiller::Command(vec!["/nonexistent/kill-it".into()]).kill().await;
        assert!(matches!(missing, Err(KillError::Spawn { .. })));
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
