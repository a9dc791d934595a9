//! Why an agent declines a round, as the coordinator hears it: a code from this fixed list
//! and its fixed description, nothing else. The details (which limit, which partner, which
//! key) go only to the partner's own log, so a decline can never carry a value or a count
//! derived from the partner's data, whatever a hostile coordinator announces to provoke one.
//! The coordinator reads the code back ([`DeclineCode::from_reason`]) to tell a researcher
//! why a round did not release.

use std::fmt;

/// Every reason an agent declines a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeclineCode {
    /// The round runs a protocol this agent does not speak.
    ProtocolUnsupported,
    /// This partner does not serve the dataset.
    DatasetNotServed,
    /// The board's manifest could not be verified from this partner's trust anchor.
    ManifestUnverified,
    /// The round's policy is not the one the board's manifest signs for the dataset.
    PolicyNotSigned,
    /// The policy differs from the partner's local copy.
    PolicyDiffersFromLocalCopy,
    /// The policy is invalid.
    PolicyInvalid,
    /// The query does not fit the policy.
    QueryInvalid,
    /// The statistic is not among those this partner answers.
    StatisticNotAllowed,
    /// The query costs more than this partner allows per query.
    CostAboveLimit,
    /// The query costs less than the manifest's or the policy's floor per query.
    CostBelowMinimum,
    /// The query would take the dataset past this partner's local total.
    LocalBudgetExhausted,
    /// This partner has joined its most rounds on the dataset today.
    RoundRateExceeded,
    /// This partner already sent its input for the same question.
    AlreadyAnswered,
    /// The query needs the board's approval and lacks enough valid signatures.
    ApprovalMissing,
    /// A participant is not a manifest partner of the dataset, or holds a key the manifest
    /// does not give it.
    ParticipantNotInManifest,
    /// This partner is not among the round's participants, or its key is not in the roster.
    NotInvited,
    /// The round's threshold, graph or survivor floor is below the manifest's or this
    /// partner's requirements.
    ThresholdTooLow,
    /// The round's configuration does not match the plan compiled here.
    ConfigurationMismatch,
    /// The query could not be evaluated on this partner's data (details in its log).
    DataUnavailable,
    /// A training round's step is not one this partner computes: coefficients missing, of
    /// the wrong length, not finite or beyond the model's cap, or an iteration out of range
    /// or already answered.
    TrainingStepInvalid,
    /// This partner has no trainer of the job's name for the dataset.
    TrainerNotConfigured,
    /// This partner's trainer command did not finish: it could not start, exited with an
    /// error, ran past its time or printed more than its limit.
    TrainerFailed,
    /// The trainer's output is not the JSON object the interface asks for.
    TrainerOutputUnreadable,
    /// The trainer's gradient sum has the wrong number of values for the model.
    TrainerOutputLength,
    /// The trainer's gradient sum is longer (L2) than the clip times its examples: its
    /// examples were not clipped.
    TrainerNormExceeded,
}

impl DeclineCode {
    /// Every code.
    pub const ALL: [DeclineCode; 25] = {
        use DeclineCode::*;
        [
            ProtocolUnsupported,
            DatasetNotServed,
            ManifestUnverified,
            PolicyNotSigned,
            PolicyDiffersFromLocalCopy,
            PolicyInvalid,
            QueryInvalid,
            StatisticNotAllowed,
            CostAboveLimit,
            CostBelowMinimum,
            LocalBudgetExhausted,
            RoundRateExceeded,
            AlreadyAnswered,
            ApprovalMissing,
            ParticipantNotInManifest,
            NotInvited,
            ThresholdTooLow,
            ConfigurationMismatch,
            DataUnavailable,
            TrainingStepInvalid,
            TrainerNotConfigured,
            TrainerFailed,
            TrainerOutputUnreadable,
            TrainerOutputLength,
            TrainerNormExceeded,
        ]
    };

    /// The code a decline's reason starts with ([`Self::public_reason`]'s form), if it is one
    /// of these.
    pub fn from_reason(reason: &str) -> Option<Self> {
        let code = reason.split(':').next().unwrap_or_default().trim();
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The stable code.
    pub fn as_str(self) -> &'static str {
        use DeclineCode::*;
        match self {
            ProtocolUnsupported => "protocol.unsupported",
            DatasetNotServed => "dataset.not_served",
            ManifestUnverified => "manifest.unverified",
            PolicyNotSigned => "policy.not_signed",
            PolicyDiffersFromLocalCopy => "policy.differs_from_local_copy",
            PolicyInvalid => "policy.invalid",
            QueryInvalid => "query.invalid",
            StatisticNotAllowed => "query.statistic_not_allowed",
            CostAboveLimit => "query.cost_above_limit",
            CostBelowMinimum => "query.cost_below_minimum",
            LocalBudgetExhausted => "budget.local_total_exhausted",
            RoundRateExceeded => "round.rate_exceeded",
            AlreadyAnswered => "query.already_answered",
            ApprovalMissing => "approval.missing",
            ParticipantNotInManifest => "round.participant_not_in_manifest",
            NotInvited => "round.not_invited",
            ThresholdTooLow => "round.threshold_too_low",
            ConfigurationMismatch => "round.configuration_mismatch",
            DataUnavailable => "data.unavailable",
            TrainingStepInvalid => "training.step_invalid",
            TrainerNotConfigured => "trainer.not_configured",
            TrainerFailed => "trainer.failed",
            TrainerOutputUnreadable => "trainer.output_unreadable",
            TrainerOutputLength => "trainer.output_length",
            TrainerNormExceeded => "trainer.norm_exceeded",
        }
    }

    /// What the code means, in words fixed here.
    pub fn description(self) -> &'static str {
        use DeclineCode::*;
        match self {
            ProtocolUnsupported => "the round runs a protocol this agent does not speak",
            DatasetNotServed => "this partner does not serve the dataset",
            ManifestUnverified => {
                "the coordinator's manifest does not verify from the board's keys"
            }
            PolicyNotSigned => "the round's policy is not the one the board's manifest signs",
            PolicyDiffersFromLocalCopy => "the round's policy differs from this partner's copy",
            PolicyInvalid => "the round's policy is invalid",
            QueryInvalid => "the query does not fit the policy",
            StatisticNotAllowed => "this partner does not answer this statistic",
            CostAboveLimit => "the query costs more than this partner allows per query",
            CostBelowMinimum => "the query costs less than the minimum per query",
            LocalBudgetExhausted => "this partner's local budget for the dataset would be exceeded",
            RoundRateExceeded => "this partner has joined its most rounds on the dataset today",
            AlreadyAnswered => "this partner already answered the same question",
            ApprovalMissing => "the query lacks the board approvals its cost needs",
            ParticipantNotInManifest => {
                "a participant is not a manifest partner of the dataset with the manifest's key"
            }
            NotInvited => "this partner is not a participant with its own key",
            ThresholdTooLow => "the round's threshold or survivor floor is below the requirements",
            ConfigurationMismatch => "the round's configuration does not match the plan",
            DataUnavailable => {
                "this partner could not evaluate the query on its data; its operators have the \
                 details in the agent's log"
            }
            TrainingStepInvalid => {
                "the training round's iteration or coefficients are not a step this partner \
                 computes"
            }
            TrainerNotConfigured => "this partner has no trainer of that name for the dataset",
            TrainerFailed => "this partner's trainer did not finish (details in the agent's log)",
            TrainerOutputUnreadable => {
                "this partner's trainer printed no {\"examples\", \"gradient_sum\"} object"
            }
            TrainerOutputLength => {
                "this partner's trainer returned a gradient of the wrong length for the model"
            }
            TrainerNormExceeded => {
                "this partner's trainer returned a gradient sum longer than the clip allows"
            }
        }
    }

    /// The text sent to the coordinator: the code and its description.
    pub fn public_reason(self) -> String {
        format!("{}: {}", self.as_str(), self.description())
    }
}

impl fmt::Display for DeclineCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_from_its_public_reason() {
        for code in DeclineCode::ALL {
            assert_eq!(DeclineCode::from_reason(&code.public_reason()), Some(code));
        }
        let distinct: std::collections::HashSet<&str> =
            DeclineCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), DeclineCode::ALL.len());
        assert_eq!(
            DeclineCode::from_reason("free text from a custom agent"),
            None
        );
    }
}
