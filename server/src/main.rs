//! `civic-coordinator`: placeholder until the coordinator issue lands.

fn main() {
    eprintln!("civic-coordinator is not built yet: see the coordinator server issue");
    std::process::exit(2);
}
