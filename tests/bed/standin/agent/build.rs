// Finds OpenSSL the way openssl-sys does (pkg-config), so a host without pkg-config or libssl-dev
// fails here with the same message as the real build.
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

include!("src/civil.rs");

fn main() {
    version_info();
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    // A test-bed knob: a build that lasts long enough to be killed midway (tests/integration/test_faults.py).
    println!("cargo:rerun-if-env-changed=ALUMET_STANDIN_BUILD_SECONDS");
    if let Some(secs) = std::env::var("ALUMET_STANDIN_BUILD_SECONDS").ok().and_then(|s| s.parse::<u64>().ok()) {
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
    // A bench knob (bench/fleet_install.py): a build that costs this much CPU, spread over every core as
    // cargo's jobs would, so that builds on several hosts of one machine compete as real ones do.
    println!("cargo:rerun-if-env-changed=ALUMET_STANDIN_BUILD_CPU_SECONDS");
    if let Some(secs) = std::env::var("ALUMET_STANDIN_BUILD_CPU_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()) {
        burn_cpu(secs);
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

/// What upstream's build.rs gets from vergen (agent/src/bin/main.rs agent_version() formats it): the git
/// sha and dirty flag of the source checkout (none without git), build timestamp, rustc version, debug.
fn version_info() {
    let git = |args: &[&str]| {
        Command::new("git").args(args).output().ok().filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(sha) = git(&["rev-parse", "HEAD"]) {
        println!("cargo:rustc-env=VERGEN_GIT_SHA={sha}");
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        println!("cargo:rustc-env=VERGEN_GIT_DIRTY={dirty}");
    }
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    println!("cargo:rustc-env=VERGEN_BUILD_DATE={y:04}-{m:02}-{d:02}");
    println!(
        "cargo:rustc-env=VERGEN_BUILD_TIMESTAMP={y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000000000Z",
        rem / 3600, rem % 3600 / 60, rem % 60
    );
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let semver = Command::new(rustc).arg("--version").output().ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default();
    println!("cargo:rustc-env=VERGEN_RUSTC_SEMVER={semver}");
    println!("cargo:rustc-env=VERGEN_CARGO_DEBUG={}", std::env::var("DEBUG").unwrap_or_else(|_| "false".into()));
}

/// CPU seconds this process has used (utime + stime of /proc/self/stat, in USER_HZ = 100 ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // utime and stime: fields 14 and 15 of the whole line
}

fn burn_cpu(total: f64) {
    let start = cpu_seconds();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let workers: Vec<_> = (0..threads).map(|_| std::thread::spawn(move || {
        let mut x: u64 = 1;
        while cpu_seconds() - start < total {
            for _ in 0..2_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            }
            std::hint::black_box(x);
        }
    })).collect();
    for w in workers {
        let _ = w.join();
    }
}
