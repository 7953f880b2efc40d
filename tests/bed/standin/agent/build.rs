// Finds OpenSSL the way openssl-sys does (pkg-config), so a host without pkg-config or libssl-dev
// fails here with the same message as the real build.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    // A test-bed knob: a build that lasts long enough to be killed midway (tests/integration/test_faults.py).
    println!("cargo:rerun-if-env-changed=ALUMET_STANDIN_BUILD_SECONDS");
    if let Some(secs) = std::env::var("ALUMET_STANDIN_BUILD_SECONDS").ok().and_then(|s| s.parse::<u64>().ok()) {
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
    let out = match Command::new("pkg-config").args(["--libs", "--cflags", "openssl"]).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "\nCould not run `\"pkg-config\" \"--libs\" \"--cflags\" \"openssl\"`\n\
             The pkg-config command could not be found ({e}).\n\
             Could not find directory of OpenSSL installation\n"
        ),
    };
    if !out.status.success() {
        panic!(
            "\nCould not find openssl via pkg-config:\n{}\n\
             The system library `openssl` required by crate `openssl-sys` was not found.\n",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for flag in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib={lib}");
        }
    }
}
