//! The sample policies of `examples/policies/`, parsed (feature `test-util`), for tests and
//! benches across the workspace.

use crate::dataset::DatasetPolicy;

/// `examples/policies/falls-housing.toml`.
pub fn falls_housing() -> DatasetPolicy {
    parse(
        include_str!("../../examples/policies/falls-housing.toml"),
        "falls-housing.toml",
    )
}

/// `examples/policies/diabetes.toml`.
pub fn diabetes() -> DatasetPolicy {
    parse(
        include_str!("../../examples/policies/diabetes.toml"),
        "diabetes.toml",
    )
}

/// The text of `examples/policies/diabetes.toml`, for tests that vary it.
pub const DIABETES_TOML: &str = include_str!("../../examples/policies/diabetes.toml");

fn parse(text: &str, name: &str) -> DatasetPolicy {
    // The samples are checked by this crate's own tests; a broken sample is a bug here.
    DatasetPolicy::from_toml(text, name).unwrap_or_else(|e| panic!("sample policy: {e}"))
}
