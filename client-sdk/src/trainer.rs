//! A partner's trainer for a DP-SGD round: the local command named in `partner.toml`, run
//! without a shell in the configuration's directory, given the announced parameters as JSON
//! on standard input, its standard output read within a size and time limit and checked by
//! the model's public plan before anything of it is encoded. Nothing a round carries is run:
//! the round names a trainer, and only a configured one is started.

use std::process::Stdio;
use std::time::Duration;

use civic_mechanisms::learning::TrainerRefusal;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{DatasetMapping, TrainerConfig};
use crate::decline::DeclineCode;
use crate::error::AgentError;
use crate::evaluate::SgdRound;

/// What a trainer reads on standard input.
#[derive(Debug, Serialize)]
pub struct TrainerInput<'a> {
    /// The federated dataset.
    pub dataset: &'a str,
    /// The trainer's name.
    pub trainer: &'a str,
    /// The round's iteration, from 0.
    pub iteration: u32,
    /// The parameters to compute gradients at.
    pub parameters: &'a [f64],
    /// Each example's gradient must be clipped to this L2 norm before summing.
    pub clip: f64,
    /// The most examples of one resident (the policy's rows per resident).
    pub examples_per_resident: u32,
}

/// Runs the round's trainer and returns its encoded output (the gradient's slots, then the
/// examples), or the decline it earns: no such trainer, a run that did not finish, or an
/// output the plan refuses. The details stay in the error for this partner's log.
pub async fn gradient_sum(
    mapping: &DatasetMapping,
    round: &SgdRound,
    iteration: u32,
    examples_per_resident: u32,
) -> Result<Vec<i64>, AgentError> {
    let config = mapping.trainers.get(&round.trainer).ok_or_else(|| {
        AgentError::Refused(
            DeclineCode::TrainerNotConfigured,
            format!(
                "a DP-SGD round asks for trainer \"{}\", which partner.toml does not configure \
                 for dataset {} ([datasets.trainers.{}])",
                round.trainer, mapping.id, round.trainer
            ),
        )
    })?;
    let input = TrainerInput {
        dataset: &mapping.id,
        trainer: &round.trainer,
        iteration,
        parameters: &round.parameters,
        clip: round.model.clip,
        examples_per_resident,
    };
    // Room for every number at full precision, and whitespace: the per-example form's, up to
    // 256 MiB.
    let examples = round.model.residents.max_rows.saturating_add(1) as usize;
    let limit = round
        .model
        .params
        .saturating_mul(examples)
        .saturating_mul(64)
        .saturating_add(1 << 20)
        .min(256 << 20);
    let output = run(config, &input, limit).await?;
    round
        .model
        .encode_trainer_output(&output, examples_per_resident)
        .map_err(refusal(&round.trainer))
}

/// The decline for a refused output.
fn refusal(trainer: &str) -> impl Fn(TrainerRefusal) -> AgentError + '_ {
    move |r| {
        let code = DeclineCode::ALL
            .into_iter()
            .find(|c| c.as_str() == r.code)
            .unwrap_or(DeclineCode::TrainerOutputUnreadable);
        AgentError::Refused(code, format!("trainer \"{trainer}\": {}", r.reason))
    }
}

/// Runs `config`'s command with `input` on standard input; its standard output, if it exits
/// successfully within its time and prints at most `limit` bytes.
pub async fn run(
    config: &TrainerConfig,
    input: &TrainerInput<'_>,
    limit: usize,
) -> Result<Vec<u8>, AgentError> {
    let failed = |reason: String| {
        AgentError::Refused(
            DeclineCode::TrainerFailed,
            format!("trainer \"{}\": {reason}", input.trainer),
        )
    };
    let (program, args) = config
        .command
        .split_first()
        .ok_or_else(|| failed("its command is empty".into()))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(&config.directory)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so that a timeout stops the workers it started too.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn().map_err(|e| {
        failed(format!(
            "could not start {program:?} in {}: {e}",
            config.directory.display()
        ))
    })?;
    let json = serde_json::to_vec(input).map_err(|e| failed(e.to_string()))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(failed("its standard streams could not be opened".into()));
    };
    let group = child.id();
    let run = async {
        // Written while the output is read, so neither side waits on a full pipe.
        let write = async move {
            // A trainer that exits without reading its input is judged by its exit status.
            let _ = stdin.write_all(&json).await;
            drop(stdin);
        };
        let (_, out, err) = tokio::join!(
            write,
            read_capped(stdout, limit + 1),
            read_tail(stderr, 64 * 1024)
        );
        let out = out.map_err(|e| failed(format!("reading its output: {e}")))?;
        let err = err.unwrap_or_default();
        let status = child
            .wait()
            .await
            .map_err(|e| failed(format!("waiting for it: {e}")))?;
        Ok::<_, AgentError>((status, out, err))
    };
    let timeout = Duration::from_secs_f64(config.timeout_seconds);
    let finished = tokio::time::timeout(timeout, run).await;
    // Whatever it left running (workers, a wrapper's children) goes with it.
    if let Some(group) = group {
        kill_group(group).await;
    }
    let (status, out, err) = finished.map_err(|_| {
        failed(format!(
            "still running after {} s: killed",
            config.timeout_seconds
        ))
    })??;
    let last_lines = || {
        let text = String::from_utf8_lossy(&err);
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    };
    if !status.success() {
        return Err(failed(format!(
            "exited with {status}; its last error lines: {}",
            last_lines()
        )));
    }
    tracing::debug!(trainer = input.trainer, stderr = %last_lines(), "the trainer finished");
    if out.len() > limit {
        return Err(failed(format!(
            "printed more than {limit} bytes, more than a gradient sum of this model needs"
        )));
    }
    Ok(out)
}

/// Where `config`'s program is: a path (with a `/`) from its directory, or a name on
/// `PATH`, as the run would find it; None if there is no such file.
pub fn locate(config: &TrainerConfig) -> Option<std::path::PathBuf> {
    let program = config.command.first()?;
    if program.contains('/') {
        let path = config.directory.join(program);
        return path.is_file().then_some(path);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// Sends SIGKILL to process group `group` (the trainer's), by the system's `kill` (the agent
/// has no unsafe code to call it directly); an empty group is no error.
async fn kill_group(group: u32) {
    #[cfg(unix)]
    {
        let _ = tokio::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
    #[cfg(not(unix))]
    let _ = group;
}

/// Reads `reader` to its end, keeping the last `cap` bytes (where a traceback ends).
async fn read_tail(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    cap: usize,
) -> std::io::Result<Vec<u8>> {
    let mut kept = std::collections::VecDeque::with_capacity(cap);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(kept.into());
        }
        kept.extend(&buf[..n]);
        let over = kept.len().saturating_sub(cap);
        kept.drain(..over);
    }
}

/// Reads `reader` to its end, keeping the first `cap` bytes and discarding the rest (so a
/// chatty program never blocks on a full pipe).
async fn read_capped(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    cap: usize,
) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(script: &str, timeout_seconds: f64, dir: &std::path::Path) -> TrainerConfig {
        TrainerConfig {
            command: vec!["sh".into(), "-c".into(), script.into()],
            timeout_seconds,
            directory: dir.to_path_buf(),
        }
    }

    const INPUT: TrainerInput<'static> = TrainerInput {
        dataset: "retina",
        trainer: "t",
        iteration: 0,
        parameters: &[0.0],
        clip: 1.0,
        examples_per_resident: 1,
    };

    fn code(e: AgentError) -> DeclineCode {
        match e {
            AgentError::Refused(code, _) => code,
            other => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn a_trainer_reads_the_round_and_its_output_is_returned_whatever_it_logs() {
        let dir = tempfile::tempdir().unwrap();
        // 200 KiB of log lines, then the round echoed back.
        let script = "i=0; while [ $i -lt 4000 ]; do echo 'progress line of fifty bytes, more or less....' >&2; i=$((i+1)); done; cat";
        let out = run(&config(script, 10.0, dir.path()), &INPUT, 1 << 20)
            .await
            .unwrap();
        let echoed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(echoed["parameters"], serde_json::json!([0.0]));
        assert_eq!(echoed["examples_per_resident"], 1);
    }

    #[tokio::test]
    async fn a_trainer_that_fails_overruns_or_outlives_its_time_is_refused_and_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |script: &'static str, timeout: f64| {
            let config = config(script, timeout, dir.path());
            async move { code(run(&config, &INPUT, 100).await.unwrap_err()) }
        };
        assert_eq!(refused("exit 3", 10.0).await, DeclineCode::TrainerFailed);
        assert_eq!(
            refused("head -c 1000 /dev/zero", 10.0).await,
            DeclineCode::TrainerFailed
        );
        let missing = TrainerConfig {
            command: vec!["./no-such-trainer".into()],
            timeout_seconds: 1.0,
            directory: dir.path().to_path_buf(),
        };
        assert_eq!(
            code(run(&missing, &INPUT, 100).await.unwrap_err()),
            DeclineCode::TrainerFailed
        );
        // A worker it left running, holding its output open, is stopped with it.
        let started = std::time::Instant::now();
        assert_eq!(
            refused("sleep 30 & echo $! > worker.pid; exit 0", 0.5).await,
            DeclineCode::TrainerFailed
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let pid = std::fs::read_to_string(dir.path().join("worker.pid")).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // Gone, or a zombie waiting for whoever adopted it to reap it.
        let state = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next()))
            .flatten();
        assert!(
            matches!(state, None | Some('Z')),
            "worker {pid} outlived its trainer ({state:?})"
        );
    }
}
