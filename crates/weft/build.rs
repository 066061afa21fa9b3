//! Release builds of the weft binary on Linux:
//! - link the functions a proxy runs first and together, in the order of
//!   symbol-order.txt (written by scripts/symbol_order.py): the kernel maps 64 KB of
//!   code around every page that runs, so hot code scattered over the 24 MB text would
//!   map most of it (measured: 11 MB of text resident at a proxy's start, 2.9 MB in order);
//! - pack the relative relocations (RELR) when the build machine's glibc reads them
//!   (2.36 and later): the 1 MB table the loader reads at every start becomes 12 KB.

fn main() {
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("PROFILE") != "release" || var("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
    // The option is lld's: Rust links with it by default on x86_64 Linux since 1.90 (not
    // when the flags choose another linker).
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    let lld = var("TARGET") == "x86_64-unknown-linux-gnu"
        && rustc_minor().is_some_and(|m| m >= 90)
        && !flags.contains("fuse-ld")
        && !flags.contains("linker");
    if order.exists() && lld {
        // (Names no longer in the binary are skipped without a warning, their code placed
        // after the others.)
        println!("cargo:rustc-link-arg-bin=weft=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bin=weft=-Wl,--no-warn-symbol-ordering");
    }
    // (lld and GNU ld since 2.38 write RELR.)
    if lld && var("HOST") == var("TARGET") && glibc_reads_relr(&var("CARGO_CFG_TARGET_ARCH")) {
        println!("cargo:rustc-link-arg-bin=weft=-Wl,-z,pack-relative-relocs");
    }
}

/// The compiler's minor version (1.N).
fn rustc_minor() -> Option<u32> {
    let out = std::process::Command::new(std::env::var("RUSTC").ok()?).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace().nth(1)?.split('.').nth(1)?.parse().ok()
}

/// Whether this machine's glibc has the symbol version that RELR binaries require.
fn glibc_reads_relr(arch: &str) -> bool {
    let dirs = [format!("/lib/{arch}-linux-gnu"), format!("/usr/lib/{arch}-linux-gnu"), "/lib64".into(), "/usr/lib64".into()];
    dirs.iter().filter_map(|d| std::fs::read(format!("{d}/libc.so.6")).ok()).any(|libc| {
        let needle = b"GLIBC_ABI_DT_RELR";
        libc.windows(needle.len()).any(|w| w == needle)
    })
}
