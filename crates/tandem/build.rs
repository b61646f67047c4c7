//! Link options for the `tandem` binary.

fn main() {
    // Pack the ~33k relative relocations of the position-independent binary into a compact
    // DT_RELR table (glibc ≥ 2.36, binutils ≥ 2.38): the loader reads ~10 KB instead of ~800 KB
    // before `main`, and every command starts sooner.
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os == "linux" && target_env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
