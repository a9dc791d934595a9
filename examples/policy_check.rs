//! Checks dataset policy files offline, as a governance board would before uploading them.
//!
//! `cargo run --example policy_check -- examples/policies/*.toml`
//!
//! Prints each policy's budget in the forms a board reads (ρ, and (ε, δ) through OpenDP), or
//! the first problem with the file, field and what was expected. Exits 1 if any file is bad.

use civic_mechanisms::accounting::epsilon_at_delta;
use civic_policies::DatasetPolicy;

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: policy_check <policy.toml>...");
        std::process::exit(2);
    }
    let mut failed = false;
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{path}: cannot read: {e}");
                failed = true;
                continue;
            }
        };
        match DatasetPolicy::from_toml(&text, &path) {
            Ok(p) => {
                let eps = epsilon_at_delta(p.total, 1e-6)
                    .map(|e| format!("{e:.3}"))
                    .unwrap_or_else(|e| e.to_string());
                println!(
                    "{path}: ok: dataset {} held by {} partners, {} columns; total {} (ε = {eps} at δ = 1e-6), per query {}; {}",
                    p.id(),
                    p.partners().len(),
                    p.columns.len(),
                    p.total,
                    p.per_query,
                    p.disclosure().describe()
                );
            }
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed));
}
