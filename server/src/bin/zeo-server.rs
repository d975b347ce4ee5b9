//! zeo-server: serves FileStorages over the ZEO 5 protocol. (Wiring lands with the protocol core.)

fn main() {
    eprintln!("zeo-server: not wired yet");
    std::process::exit(64);
}
