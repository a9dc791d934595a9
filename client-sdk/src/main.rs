//! `civic-agent`: placeholder until the partner agent issue lands.

fn main() {
    eprintln!("civic-agent is not built yet: see the partner agent issue");
    std::process::exit(2);
}
