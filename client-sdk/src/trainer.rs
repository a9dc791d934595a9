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
    /// The most examples the trainer may use (the round's bound per partner).
    pub max_examples: u64,
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
        max_examples: round.model.residents.max_rows,
        examples_per_resident,
    };
    // Room for every number at full precision, and whitespace.
    let limit = (1 << 20) + 64 * round.model.params;
    let output = run(config, &input, limit).await?;
    round
        .model
        .encode_trainer_output(&output)
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
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(&config.directory)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
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
            read_capped(stderr, 64 * 1024)
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
    let (status, out, err) = tokio::time::timeout(timeout, run).await.map_err(|_| {
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
