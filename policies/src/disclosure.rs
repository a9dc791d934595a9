//! Statistical disclosure control: rules applied to released counts after the noise, at no
//! privacy cost (post-processing).

use serde::{Deserialize, Serialize};

/// A dataset's disclosure-control profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "profile", rename_all = "snake_case", deny_unknown_fields)]
pub enum DisclosureProfile {
    /// Release counts as they are (after the non-negativity clamp).
    None,
    /// The NHS / OpenSAFELY rule: counts of 1 to 7 redacted, the rest rounded to the nearest 5.
    Nhs,
    /// A board's own rule.
    Custom {
        /// Counts from 1 up to this value are redacted (0 is released as 0).
        suppress_up_to: u32,
        /// Released counts are rounded to the nearest multiple of this (1 = no rounding).
        round_to: u32,
    },
}

/// One cell after disclosure control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disclosed {
    /// The released value.
    Value(i64),
    /// Withheld by the suppression rule.
    Redacted,
}

impl DisclosureProfile {
    /// (suppress_up_to, round_to) of the profile.
    pub fn rule(self) -> (u32, u32) {
        match self {
            DisclosureProfile::None => (0, 1),
            DisclosureProfile::Nhs => (7, 5),
            DisclosureProfile::Custom {
                suppress_up_to,
                round_to,
            } => (suppress_up_to, round_to),
        }
    }

    /// Applies the rule to a non-negative count (negative values are treated as 0: the
    /// caller clamps to the feasible range first).
    pub fn apply(self, count: i64) -> Disclosed {
        let (suppress_up_to, round_to) = self.rule();
        let count = count.max(0);
        if count >= 1 && count <= i64::from(suppress_up_to) {
            return Disclosed::Redacted;
        }
        let step = i64::from(round_to.max(1));
        // Nearest multiple, halves rounding up: 12 -> 10, 13 -> 15 with step 5.
        let rounded = (count.saturating_add(step / 2) / step).saturating_mul(step);
        Disclosed::Value(rounded)
    }

    /// A one-line description for the privacy receipt.
    pub fn describe(self) -> String {
        match self.rule() {
            (0, 1) => "no disclosure control".into(),
            (s, r) => format!("counts 1-{s} redacted, others rounded to the nearest {r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Disclosed::{Redacted, Value};

    #[test]
    fn nhs_profile_redacts_one_to_seven_and_rounds_to_five() {
        let nhs = DisclosureProfile::Nhs;
        let got: Vec<Disclosed> = [0, 1, 7, 8, 12, 13, 100, -3]
            .iter()
            .map(|&c| nhs.apply(c))
            .collect();
        assert_eq!(
            got,
            vec![
                Value(0),
                Redacted,
                Redacted,
                Value(10),
                Value(10),
                Value(15),
                Value(100),
                Value(0)
            ]
        );
        assert_eq!(
            nhs.describe(),
            "counts 1-7 redacted, others rounded to the nearest 5"
        );
    }

    #[test]
    fn none_and_custom_profiles() {
        assert_eq!(DisclosureProfile::None.apply(3), Value(3));
        let custom = DisclosureProfile::Custom {
            suppress_up_to: 10,
            round_to: 10,
        };
        assert_eq!(custom.apply(10), Redacted);
        assert_eq!(custom.apply(11), Value(10));
        assert_eq!(custom.apply(15), Value(20));
        assert_eq!(custom.apply(i64::MAX), Value(i64::MAX / 10 * 10));
        let zero_step = DisclosureProfile::Custom {
            suppress_up_to: 0,
            round_to: 0,
        };
        assert_eq!(zero_step.apply(7), Value(7));
    }
}
