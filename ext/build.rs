// Decides, in one place, whether the futex queue (the shared side file
// `<db>-hybrid`, `src/shared/`) is compiled: `cfg(hybrid_futex)` on Linux,
// unless `--cfg hybrid_portable` (in `RUSTFLAGS`) forces the portable path,
// the code every other target compiles, so that it is built and tested on
// Linux too (`make test`). Without `hybrid_futex` every connection runs in
// backoff mode. The loadable build (`loadable/Cargo.toml`) uses this file
// as its build script too.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(hybrid_futex)");
    println!("cargo::rustc-check-cfg=cfg(hybrid_portable)");
    println!("cargo::rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let forced_portable = std::env::var_os("CARGO_CFG_HYBRID_PORTABLE").is_some();
    if linux && !forced_portable {
        println!("cargo::rustc-cfg=hybrid_futex");
    }
}
