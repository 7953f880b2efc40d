//! Stand-in for alumet-agent 0.9.5 in alumet-setup's test bed: upstream's command line, config checks,
//! log messages and CSV format, and the host access that needs privileges (perf_event_open, powercap,
//! /proc of other users' processes, dlopen of NVML). docs/testbed.md lists the upstream sources of each.
mod civil;
mod plugins;
mod sys;
mod toml;

use std::env;
use std::fmt::Write as _;
use std::process::exit;

use toml::{Table, Value};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const BINARY: &str = "alumet-agent";

/// `0.9.5-<sha>[-dirty] (<build timestamp>, rustc <semver>, debug=<bool>)`, as upstream's agent_version().
fn agent_version() -> String {
    let sha = option_env!("VERGEN_GIT_SHA").unwrap_or("alpha-unknown");
    let dirty = if option_env!("VERGEN_GIT_DIRTY") == Some("true") { "-dirty" } else { "" };
    format!(
        "{VERSION}-{sha}{dirty} ({}, rustc {}, debug={})",
        env!("VERGEN_BUILD_TIMESTAMP"),
        env!("VERGEN_RUSTC_SEMVER"),
        env!("VERGEN_CARGO_DEBUG")
    )
}

// ---- logging: env_logger's default format, on stderr ---------------------------------------------

fn level_rank(level: &str) -> u8 {
    match level {
        "ERROR" => 1,
        "WARN" => 2,
        "INFO" => 3,
        "DEBUG" => 4,
        "TRACE" => 5,
        _ => 0,
    }
}

pub fn log(level: &str, target: &str, msg: &str) {
    let wanted = env::var("RUST_LOG").unwrap_or_else(|_| "info".into()).to_ascii_uppercase();
    let max = if wanted == "OFF" { 0 } else { level_rank(&wanted).max(1) };
    if level_rank(level) <= max {
        eprintln!("[{} {level:<5} {target}] {msg}", utc_now(false));
    }
}

/// RFC 3339 UTC time: seconds (env_logger) or nanoseconds with trailing zeros cut (the csv plugin).
pub fn utc_now(nanos: bool) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (days, rem) = ((now.as_secs() / 86400) as i64, now.as_secs() % 86400);
    let (y, m, d) = civil::civil_from_days(days);
    let mut s = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    if nanos && now.subsec_nanos() != 0 {
        let frac = format!("{:09}", now.subsec_nanos());
        let _ = write!(s, ".{}", frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

// ---- errors: anyhow's chain, as main() returning Err prints it ----------------------------------------

/// An error and its causes, outermost first.
#[derive(Debug)]
pub struct Error(pub Vec<String>);

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Error(vec![msg.into()])
    }

    pub fn context(mut self, msg: impl Into<String>) -> Self {
        self.0.insert(0, msg.into());
        self
    }

    fn render(&self) -> String {
        let mut out = format!("Error: {}", self.0[0]);
        let causes = &self.0[1..];
        if !causes.is_empty() {
            out.push_str("\n\nCaused by:");
            for (i, cause) in causes.iter().enumerate() {
                let (head, indent) = if causes.len() == 1 { (String::new(), "    ") } else { (format!("{i}: "), "       ") };
                let mut lines = cause.lines();
                let _ = write!(out, "\n    {head}{}", lines.next().unwrap_or(""));
                for line in lines {
                    let _ = write!(out, "\n{indent}{line}");
                }
            }
        }
        out
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(e.to_string())
    }
}

// ---- command line: upstream's clap definitions (agent/src/bin/main.rs, mod cli) -------------------

pub struct Cli {
    pub config: String,
    pub no_default_config: bool,
    pub overrides: Vec<String>,
    pub plugins: Option<Vec<String>>,
    pub output_file: Option<String>,
    pub command: Command,
}

pub enum Command {
    Run,
    Exec { ignore_exit_code: bool, program: String, args: Vec<String> },
    Watch(u32),
    ConfigRegen,
    PluginsList { status: bool },
}

const USAGE: &str = "Usage: alumet-agent [OPTIONS] [COMMAND]";

fn usage_error(msg: &str) -> ! {
    eprintln!("error: {msg}\n\n{USAGE}\n\nFor more information, try '--help'.");
    exit(2)
}

const HELP: &str = "Alumet standard agent: measure energy and performance metrics.

Usage: alumet-agent [OPTIONS] [COMMAND]

Commands:
  run      Run the agent and monitor the system
  exec     Execute a command and observe its process
  watch    Watch a PID and observe it until its end
  config   Manipulate the configuration
  plugins  Get plugins information
  help     Print this message or the help of the given subcommand(s)

Options:
      --config <CONFIG>                  Path to the config file [env: ALUMET_CONFIG=] [default: alumet-config.toml]
      --no-default-config                If set, the config file must exist, otherwise the agent will fail to start with an error
      --config-override <CONFIG_OVERRIDE>  Config options overrides
      --plugins <PLUGINS>                List of plugins to enable, separated by commas, ex. `csv,rapl`
      --max-update-interval <MAX_UPDATE_INTERVAL>
      --source-channel-size <SOURCE_CHANNEL_SIZE>
      --normal-worker-threads <NORMAL_WORKER_THREADS>  [env: ALUMET_NORMAL_THREADS=]
      --priority-worker-threads <PRIORITY_WORKER_THREADS>  [env: ALUMET_PRIORITY_THREADS=]
      --output-file <OUTPUT_FILE>        Path to the output file (CSV plugin)
      --relay-out <RELAY_OUT>
      --relay-in <RELAY_IN>
  -h, --help                             Print help
  -V, --version                          Print version";

fn parse_cli(argv: Vec<String>) -> Cli {
    let mut cli = Cli {
        config: env::var("ALUMET_CONFIG").unwrap_or_else(|_| "alumet-config.toml".into()),
        no_default_config: false,
        overrides: Vec::new(),
        plugins: None,
        output_file: None,
        command: Command::Run,
    };
    let mut i = 0;
    let mut rest: Vec<String> = Vec::new();
    while i < argv.len() {
        let arg = argv[i].clone();
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> String {
            if let Some(v) = inline.clone() {
                return v;
            }
            i += 1;
            argv.get(i).cloned().unwrap_or_else(|| {
                usage_error(&format!("a value is required for '{name} <VALUE>' but none was supplied"))
            })
        };
        match name.as_str() {
            "-V" | "--version" => {
                println!("{BINARY} {}", agent_version());
                exit(0)
            }
            "-h" | "--help" => {
                println!("{HELP}");
                exit(0)
            }
            "--config" => cli.config = value(),
            "--no-default-config" => cli.no_default_config = true,
            "--config-override" => cli.overrides.push(value()),
            "--plugins" => cli.plugins = Some(value().split(',').map(str::to_string).collect()),
            "--output-file" => cli.output_file = Some(value()),
            "--max-update-interval" | "--source-channel-size" | "--normal-worker-threads"
            | "--priority-worker-threads" | "--relay-out" | "--relay-in" => {
                value();
            }
            s if s.starts_with('-') => usage_error(&format!("unexpected argument '{s}' found")),
            _ => {
                rest = argv[i..].to_vec();
                break;
            }
        }
        i += 1;
    }
    let words: Vec<&str> = rest.iter().map(String::as_str).collect();
    cli.command = match words.as_slice() {
        [] | ["run"] => Command::Run,
        ["exec", tail @ ..] => {
            let ignore_exit_code = tail.first() == Some(&"--ignore-exit-code");
            let tail = if ignore_exit_code { &tail[1..] } else { tail };
            match tail {
                [program, args @ ..] => Command::Exec {
                    ignore_exit_code,
                    program: program.to_string(),
                    args: args.iter().map(|s| s.to_string()).collect(),
                },
                [] => usage_error("the following required arguments were not provided:\n  <PROGRAM>"),
            }
        }
        ["watch", pid] => match pid.parse::<u32>() {
            Ok(pid) => Command::Watch(pid),
            Err(e) => usage_error(&format!("invalid value '{pid}' for '<PID>': {e}")),
        },
        ["watch"] => usage_error("the following required arguments were not provided:\n  <PID>"),
        ["config", "regen"] => Command::ConfigRegen,
        ["plugins", a @ ..] if a.iter().filter(|w| **w != "--status").eq(["list"].iter()) => {
            Command::PluginsList { status: a.contains(&"--status") }
        }
        [word, ..] => usage_error(&format!("unrecognized subcommand '{word}'")),
    };
    cli
}

// ---- configuration (core/alumet/src/agent/config.rs) ---------------------------------------------

/// `${NAME}` replaced by the environment variable NAME, as the agent's Loader does.
fn substitute_env(text: &str) -> Result<String, Error> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or_else(|| Error::new("invalid syntax for env var substitution"))?;
        let name = &rest[start + 2..start + end];
        let value = env::var(name)
            .map_err(|_| Error::new(format!("the environment variable {name} does not exist")))?;
        out.push_str(&value);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn load_config(cli: &Cli, enabled: &[&str]) -> Result<Table, Error> {
    // Upstream parses the overrides first, then loads the file with them.
    let mut over = Table::new();
    for o in &cli.overrides {
        let parsed = toml::parse(o).map_err(|e| {
            Error(vec!["invalid config overrides".into(), format!("config override is not a valid TOML table: {o}"), e])
        })?;
        toml::merge(&mut over, parsed);
    }
    if let Some(out) = &cli.output_file {
        let csv = vec![("output_path".to_string(), Value::Str(out.clone()))];
        toml::merge(&mut over, vec![("plugins".into(), Value::Table(vec![("csv".into(), Value::Table(csv))]))]);
    }
    let mut config = load_file(cli, enabled).map_err(|e| e.context("could not load config file"))?;
    toml::merge(&mut config, over);
    Ok(config)
}

fn load_file(cli: &Cli, enabled: &[&str]) -> Result<Table, Error> {
    let load_error = format!("could not load config from '{}'", cli.config);
    let text = match std::fs::read_to_string(&cli.config) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if cli.no_default_config {
                return Err(Error(vec![load_error, "read failed".into(), e.to_string()]));
            }
            let text = plugins::default_config(enabled);
            std::fs::write(&cli.config, &text)
                .map_err(|e| Error(vec![load_error.clone(), "write (of default config) failed".into(), e.to_string()]))?;
            text
        }
        Err(e) => return Err(Error(vec![load_error, "read failed".into(), e.to_string()])),
    };
    let text = substitute_env(&text).map_err(|e| e.context("env var substitution failed").context(load_error.clone()))?;
    toml::parse(&text).map_err(|e| Error(vec![load_error, "invalid TOML config".into(), e]))
}


fn main() {
    let cli = parse_cli(env::args().skip(1).collect());
    log("INFO", "alumet_agent", &format!("Starting Alumet agent '{BINARY}' v{}", agent_version()));
    log("DEBUG", "alumet_agent", &format!("linked against {}", sys::openssl_version()));
    match plugins::run(cli) {
        Ok(code) => exit(code),
        Err(e) => {
            eprintln!("{}", e.render());
            exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_like_anyhow() {
        let e = Error(vec!["startup failure".into(), "plugin failed to start: rapl v0.3.1".into(), "a\nb".into()]);
        assert_eq!(
            e.render(),
            "Error: startup failure\n\nCaused by:\n    0: plugin failed to start: rapl v0.3.1\n    1: a\n       b"
        );
        assert_eq!(Error(vec!["x".into(), "y".into()]).render(), "Error: x\n\nCaused by:\n    y");
    }

    #[test]
    fn version_format() {
        let v = agent_version();
        assert!(v.starts_with("0.9.5-") && v.contains(" (") && v.contains(", rustc ") && v.ends_with(")"), "{v}");
    }

    #[test]
    fn env_substitution() {
        unsafe { env::set_var("STANDIN_TEST_VAR", "x") };
        assert_eq!(substitute_env("a ${STANDIN_TEST_VAR} b").unwrap(), "a x b");
        assert!(substitute_env("${STANDIN_ABSENT_VAR_123}").is_err());
    }
}
