//! The `signet` command: daemon, ceremony, operator and workstation subcommands.

fn main() {
    println!("signet {}", env!("CARGO_PKG_VERSION"));
}
