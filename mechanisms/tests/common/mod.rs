//! Helpers shared by the mechanisms integration tests.

use civic_mechanisms::AggregationPlan;
use civic_policies::{DatasetPolicy, Query};

/// Parses, validates and compiles a query (JSON) against a policy, for a population of up to
/// 10⁶ rows per partner.
pub fn plan(policy: &DatasetPolicy, json: &str) -> AggregationPlan {
    let query: Query = serde_json::from_str(json).expect("query parses");
    let validated = query.validate(policy).expect("query is valid");
    AggregationPlan::compile(&validated, policy, 1_000_000).expect("compiles")
}
