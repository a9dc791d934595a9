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

/// `examples/policies/housing-health.toml`: a linked dataset.
pub fn housing_health() -> DatasetPolicy {
    parse(HOUSING_HEALTH_TOML, "housing-health.toml")
}

/// The text of `examples/policies/housing-health.toml`, for tests that vary it.
pub const HOUSING_HEALTH_TOML: &str = include_str!("../../examples/policies/housing-health.toml");

/// `examples/policies/diabetes.toml` with central noise (`noise = "central"`): for tests of
/// pure ε (discrete Laplace), and of the exact sums partners send.
pub fn diabetes_central() -> DatasetPolicy {
    parse(&central_noise(DIABETES_TOML), "diabetes.toml")
}

/// A policy's TOML with `noise = "central"` in its `[governance]`.
pub fn central_noise(toml: &str) -> String {
    toml.replacen("[governance]\n", "[governance]\nnoise = \"central\"\n", 1)
}

/// The text of `examples/policies/diabetes.toml`, for tests that vary it.
pub const DIABETES_TOML: &str = include_str!("../../examples/policies/diabetes.toml");

fn parse(text: &str, name: &str) -> DatasetPolicy {
    // The samples are checked by this crate's own tests; a broken sample is a bug here.
    DatasetPolicy::from_toml(text, name).unwrap_or_else(|e| panic!("sample policy: {e}"))
}
