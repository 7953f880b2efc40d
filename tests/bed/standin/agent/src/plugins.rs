//! The agent's life (core/alumet/src/agent/builder.rs, exec.rs, watch.rs) and the plugins the profiles
//! use, each doing on the host what upstream's does where privileges matter; docs/testbed.md has details.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::time::{Duration, Instant};

use crate::sys::{self, PerfEvent};
use crate::toml::{self, Table, Value};
use crate::{Cli, Command, Error, log};

/// Every plugin of agent v0.9.5 (agent/src/bin/main.rs load_plugins_metadata), name and crate version.
const ALL: &[(&str, &str)] = &[
    ("csv", "0.2.0"), ("prometheus-exporter", "0.1.0"), ("influxdb", "0.1.0"), ("mongodb", "0.1.0"),
    ("relay-client", "0.6.0"), ("relay-server", "0.6.0"), ("opentelemetry", "0.1.0"), ("aggregation", "0.1.0"),
    ("energy-attribution", "0.1.1"), ("energy-estimation-tdp", "2.0.0"), ("elasticsearch", "0.1.0"),
    ("kwollect-input", "1.0.0"), ("kwollect-output", "0.1.0"), ("filter", "0.1.0"), ("energy-to-carbon", "0.1.0"),
    ("socket-control", "0.2.1"), ("k8s", "0.1.1"), ("slurm", "0.1.1"), ("oar", "0.1.1"), ("cgroups", "0.1.1"),
    ("grace-hopper", "0.1.0"), ("rapl", "0.3.1"), ("perf", "0.1.0"), ("procfs", "0.3.0"), ("nvml", "0.6.0"),
    ("process-to-cgroup-bridge", "0.1.0"), ("jetson", "1.0.0"), ("amd-gpu", "1.0.0"), ("quarch", "0.1.0"),
];

fn version_of(name: &str) -> &'static str {
    ALL.iter().find(|(n, _)| *n == name).map_or("0.0.0", |(_, v)| v)
}

/// The plugins the stand-in writes a default configuration for (upstream's defaults, same keys).
const DEFAULTS: &[(&str, &str)] = &[
    ("csv", "output_path = \"alumet-output.csv\"\nforce_flush = true\nappend_unit_to_metric_name = true\n\
             use_unit_display_name = true\ncsv_delimiter = \";\"\ncsv_late_delimiter = \",\"\n"),
    ("rapl", "poll_interval = \"1s\"\nflush_interval = \"5s\"\nno_perf_events = false\n"),
    ("perf", "poll_interval = \"1s\"\nflush_interval = \"5s\"\nhardware_events = [\"REF_CPU_CYCLES\", \"CACHE_MISSES\", \
              \"BRANCH_MISSES\"]\nsoftware_events = []\ncache_events = [\"LL_READ_MISS\"]\n"),
    ("procfs", "[plugins.procfs.kernel]\nenabled = true\npoll_interval = \"5s\"\n\n[plugins.procfs.memory]\n\
                enabled = true\npoll_interval = \"5s\"\nmetrics = [\"MemTotal\", \"MemFree\", \"MemAvailable\", \
                \"Cached\", \"SwapCached\", \"Active\", \"Inactive\", \"Mapped\"]\n\n[plugins.procfs.network]\n\
                enabled = true\npoll_interval = \"5s\"\n\n[plugins.procfs.processes]\nenabled = true\n\
                refresh_interval = \"2s\"\nstrategy = \"watcher\"\n\n[[plugins.procfs.processes.groups]]\n\
                exe_regex = \"\"\npoll_interval = \"2s\"\nflush_interval = \"4s\"\nmemory_mode = \"quick\"\n\n\
                [plugins.procfs.processes.events]\npoll_interval = \"1s\"\nflush_interval = \"4s\"\n\
                memory_mode = \"quick\"\n"),
    ("nvml", "poll_interval = \"1s\"\nflush_interval = \"5s\"\nskip_failed_devices = true\nmode = \"full\"\n"),
];

pub fn default_config(enabled: &[&str]) -> String {
    let mut out = String::new();
    for (name, body) in DEFAULTS.iter().filter(|(n, _)| enabled.contains(n)) {
        if body.starts_with('[') {
            out.push_str(body);
        } else {
            out.push_str(&format!("[plugins.{name}]\n{body}"));
        }
        out.push('\n');
    }
    out
}

// ---- config checks: serde's messages for the plugins' Config structs ------------------------------

#[derive(Clone, Copy)]
enum Kind {
    Duration,
    Bool,
    Str,
    Char,
    Array,
    Table,
    Variant(&'static [&'static str]),
}

struct Field(&'static str, Kind, bool); // name, kind, required

fn expected_list(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match q.len() {
        0 => "there are no fields".into(),
        1 => q[0].clone(),
        2 => format!("{} or {}", q[0], q[1]),
        _ => format!("one of {}", q.join(", ")),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("string {s:?}"),
        Value::Int(i) => format!("integer `{i}`"),
        Value::Float(f) => format!("floating point `{f}`"),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Array(_) => "sequence".into(),
        Value::Table(_) => "map".into(),
    }
}

fn check(table: &Table, fields: &[Field], deny_unknown: bool) -> Result<(), String> {
    if deny_unknown {
        let names: Vec<&str> = fields.iter().map(|f| f.0).collect();
        if let Some((k, _)) = table.iter().find(|(k, _)| !names.contains(&k.as_str())) {
            return Err(format!("unknown field `{k}`, expected {}", expected_list(&names)));
        }
    }
    for Field(name, kind, required) in fields {
        let Some(v) = toml::get(table, name) else {
            if *required {
                return Err(format!("missing field `{name}`"));
            }
            continue;
        };
        let ok = match (kind, v) {
            (Kind::Duration, Value::Str(s)) => {
                if parse_duration(s).is_none() {
                    return Err(format!("invalid value: string {s:?}, expected a duration"));
                }
                true
            }
            (Kind::Bool, Value::Bool(_)) | (Kind::Str, Value::Str(_)) | (Kind::Array, Value::Array(_))
            | (Kind::Table, Value::Table(_)) => true,
            (Kind::Char, Value::Str(s)) => {
                if s.chars().count() != 1 {
                    return Err(format!("invalid value: string {s:?}, expected a character"));
                }
                true
            }
            (Kind::Variant(names), Value::Str(s)) => {
                if !names.contains(&s.as_str()) {
                    return Err(format!("unknown variant `{s}`, expected {}", expected_list(names)));
                }
                true
            }
            _ => false,
        };
        if !ok {
            let want = match kind {
                Kind::Duration => "a duration",
                Kind::Bool => "a boolean",
                Kind::Str | Kind::Char => "a string",
                Kind::Array => "a sequence",
                Kind::Table => "a map",
                Kind::Variant(_) => "an enum variant",
            };
            return Err(format!("invalid type: {}, expected {want}", describe(v)));
        }
    }
    Ok(())
}

/// humantime's durations: "1s", "500ms", "1m 30s", "2h".
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == ' ').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        total += match unit {
            "ns" | "nsec" | "nanos" => Duration::from_nanos(n),
            "us" | "usec" | "µs" | "micros" => Duration::from_micros(n),
            "ms" | "msec" | "millis" => Duration::from_millis(n),
            "s" | "sec" | "secs" | "second" | "seconds" => Duration::from_secs(n),
            "m" | "min" | "mins" | "minute" | "minutes" => Duration::from_secs(n * 60),
            "h" | "hr" | "hrs" | "hour" | "hours" => Duration::from_secs(n * 3600),
            "d" | "day" | "days" => Duration::from_secs(n * 86400),
            _ => return None,
        };
    }
    Some(total)
}

fn dur(t: &Table, key: &str) -> Duration {
    match toml::get(t, key) {
        Some(Value::Str(s)) => parse_duration(s).unwrap_or(Duration::from_secs(1)),
        _ => Duration::from_secs(1),
    }
}

fn boolean(t: &Table, key: &str, default: bool) -> bool {
    match toml::get(t, key) {
        Some(Value::Bool(b)) => *b,
        _ => default,
    }
}

fn string(t: &Table, key: &str) -> String {
    match toml::get(t, key) {
        Some(Value::Str(s)) => s.clone(),
        _ => String::new(),
    }
}

fn sub<'a>(t: &'a Table, key: &str) -> &'a Table {
    static EMPTY: Table = Vec::new();
    match toml::get(t, key) {
        Some(Value::Table(inner)) => inner,
        _ => &EMPTY,
    }
}

const DUR: Kind = Kind::Duration;
const MEMORY_MODES: &[&str] = &["quick", "slow_but_accurate"];

/// The checks of each plugin's init (deserialize_config), with the Rust type name upstream reports.
fn check_config(name: &str, t: &Table) -> Result<(), String> {
    let (ty, result) = match name {
        "rapl" => ("plugin_rapl::Config", check(t, &[Field("poll_interval", DUR, true),
            Field("flush_interval", DUR, true), Field("no_perf_events", Kind::Bool, true)], true)),
        "csv" => ("plugin_csv::Config", check(t, &[Field("output_path", Kind::Str, true),
            Field("force_flush", Kind::Bool, true), Field("append_unit_to_metric_name", Kind::Bool, true),
            Field("use_unit_display_name", Kind::Bool, true), Field("csv_delimiter", Kind::Char, true),
            Field("csv_late_delimiter", Kind::Char, true)], true)),
        "perf" => ("plugin_perf::Config", check(t, &[Field("poll_interval", DUR, true),
            Field("flush_interval", DUR, true), Field("hardware_events", Kind::Array, true),
            Field("software_events", Kind::Array, true), Field("cache_events", Kind::Array, true)], true)),
        "nvml" => ("plugin_nvidia_nvml::Config", check(t, &[Field("poll_interval", DUR, true),
            Field("flush_interval", DUR, true), Field("skip_failed_devices", Kind::Bool, false),
            Field("mode", Kind::Variant(&["full", "minimal"]), true)], true)),
        "procfs" => ("plugin_procfs::config::Config", check_procfs(t)),
        "energy-attribution" => ("plugin_energy_attribution::formula::config::PluginConfig",
            check(t, &[Field("formulas", Kind::Table, true)], false)),
        _ => return Ok(()),
    };
    result.map_err(|e| format!("{ty}\n{e}"))
}

fn check_procfs(t: &Table) -> Result<(), String> {
    let tables = [Field("kernel", Kind::Table, true), Field("memory", Kind::Table, true),
        Field("network", Kind::Table, true), Field("processes", Kind::Table, true)];
    check(t, &tables, true)?;
    let enabled = Field("enabled", Kind::Bool, false);
    check(sub(t, "kernel"), &[Field("enabled", Kind::Bool, false), Field("poll_interval", DUR, true)], false)?;
    check(sub(t, "network"), &[Field("enabled", Kind::Bool, false), Field("poll_interval", DUR, true)], false)?;
    check(sub(t, "memory"), &[Field("enabled", Kind::Bool, false), Field("poll_interval", DUR, true),
        Field("metrics", Kind::Array, true)], false)?;
    let processes = sub(t, "processes");
    check(processes, &[enabled, Field("refresh_interval", DUR, true), Field("groups", Kind::Array, true),
        Field("strategy", Kind::Variant(&["watcher", "event"]), false), Field("events", Kind::Table, true)], false)?;
    check(sub(processes, "events"), &[Field("poll_interval", DUR, true), Field("flush_interval", DUR, true),
        Field("memory_mode", Kind::Variant(MEMORY_MODES), true)], false)?;
    if let Some(Value::Array(groups)) = toml::get(processes, "groups") {
        for g in groups {
            let Value::Table(g) = g else { return Err("invalid type: sequence, expected a map".into()) };
            // exe_regex goes through serde_regex::option (a `with` function): absent is an error, "" is None.
            check(g, &[Field("exe_regex", Kind::Str, true), Field("poll_interval", DUR, true),
                Field("flush_interval", DUR, true), Field("memory_mode", Kind::Variant(MEMORY_MODES), true)], false)?;
        }
    }
    Ok(())
}

// ---- measurements and the csv output (plugins/csv/src/output.rs, csv.rs) --------------------------

#[derive(Clone, Copy, PartialEq)]
enum Unit {
    Joule,
    Percent,
    Byte,
    NanoSecond,
    MilliSecond,
}

impl Unit {
    fn name(self, display: bool) -> &'static str {
        match self {
            Unit::Joule => "J",
            Unit::Percent => "%",
            Unit::Byte => if display { "B" } else { "By" },
            Unit::NanoSecond => "ns",
            Unit::MilliSecond => "ms",
        }
    }
}

struct Point {
    metric: String,
    unit: Unit,
    timestamp: String,
    value: String,
    resource: (&'static str, String),
    consumer: (&'static str, String),
    attrs: Vec<(&'static str, String)>,
}

fn point(metric: &str, unit: Unit, value: String, consumer: (&'static str, String)) -> Point {
    Point {
        metric: metric.into(),
        unit,
        timestamp: crate::utc_now(true),
        value,
        resource: ("local_machine", String::new()),
        consumer,
        attrs: Vec::new(),
    }
}

fn f64_string(x: f64) -> String {
    format!("{x}")
}

struct Csv {
    file: File,
    header: Option<Vec<String>>,
    force_flush: bool,
    append_unit: bool,
    display: bool,
    delimiter: char,
    late: char,
}

impl Csv {
    fn escape(&self, s: &str) -> String {
        if s.contains([self.delimiter, '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }

    fn write(&mut self, points: &[Point]) -> io::Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        if self.header.is_none() {
            let attrs: BTreeSet<&str> = points.iter().flat_map(|p| p.attrs.iter().map(|(k, _)| *k)).collect();
            let mut header: Vec<String> = ["metric", "timestamp", "value", "resource_kind", "resource_id",
                "consumer_kind", "consumer_id"].iter().map(|s| s.to_string()).collect();
            header.extend(attrs.iter().map(|s| s.to_string()));
            let d = self.delimiter.to_string();
            writeln!(self.file, "{}{d}__late_attributes", header.join(&d))?;
            self.header = Some(header);
        }
        let header = self.header.clone().unwrap_or_default();
        let mut out = String::new();
        for p in points {
            let unit = if self.append_unit { p.unit.name(self.display) } else { "" };
            let metric = if unit.is_empty() { p.metric.clone() } else { format!("{}_{unit}", p.metric) };
            let mut data: HashMap<String, String> = HashMap::new();
            for (k, v) in [("metric", metric), ("timestamp", p.timestamp.clone()), ("value", p.value.clone()),
                ("resource_kind", p.resource.0.to_string()), ("resource_id", p.resource.1.clone()),
                ("consumer_kind", p.consumer.0.to_string()), ("consumer_id", p.consumer.1.clone())] {
                data.insert(k.into(), v);
            }
            for (k, v) in &p.attrs {
                data.insert(k.to_string(), v.clone());
            }
            for column in &header {
                if let Some(v) = data.remove(column) {
                    out.push_str(&self.escape(&v));
                }
                out.push(self.delimiter);
            }
            let late: Vec<String> = data.iter().map(|(k, v)| {
                format!("{k}={}", v.replace(self.late, &format!("\\{}", self.late)))
            }).collect();
            out.push_str(&self.escape(&late.join(&self.late.to_string())));
            out.push('\n');
        }
        self.file.write_all(out.as_bytes())?;
        if self.force_flush {
            self.file.flush()?;
        }
        Ok(())
    }
}

// ---- rapl (plugins/rapl/src): perf_events on the power PMU, else powercap ------------------------

const PERF_SYSFS_DIR: &str = "/sys/devices/power";
const POWERCAP_RAPL_PATH: &str = "/sys/devices/virtual/powercap/intel-rapl";
const PERF_PERMISSION_ADVICE: &str = "Try to set kernel.perf_event_paranoid to 0 or -1, or to give CAP_PERFMON to \
    the application's binary (CAP_SYS_ADMIN before Linux 5.8).";
const POWERCAP_PERMISSION_ADVICE: &str = "Try to adjust file permissions.";

struct PowerEvent {
    domain: String,
    code: u64,
    scale: f64,
}

struct PowerZone {
    domain: String,
    path: String,
    socket: u32,
}

enum RaplProbe {
    Perf(Vec<(PerfEvent, String, f64, u32, Option<u64>)>),
    Powercap(Vec<(File, String, u32, u64, Option<u64>)>),
}

fn domain_of(name: &str) -> String {
    match name {
        "pkg" => "package".into(),
        "cores" => "pp0".into(),
        "gpu" => "pp1".into(),
        "ram" => "dram".into(),
        other => other.into(),
    }
}

fn all_power_events() -> Result<Vec<PowerEvent>, Error> {
    let dir = format!("{PERF_SYSFS_DIR}/events");
    let entries = fs::read_dir(&dir)
        .map_err(|e| Error(vec![format!("Could not read {dir}. {PERF_PERMISSION_ADVICE}"), e.to_string()]))?;
    let mut events = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(short) = name.strip_prefix("energy-").filter(|n| !n.contains('.')) else { continue };
        let path = entry.path().to_string_lossy().into_owned();
        let read = fs::read_to_string(&path)
            .map_err(|e| Error(vec![format!("Could not read {path:?}. {PERF_PERMISSION_ADVICE}"), e.to_string()]))?;
        let code = read.trim().strip_prefix("event=").and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok())
            .ok_or_else(|| Error::new(format!("Failed to parse {path:?}: '{read}'")))?;
        let scale = fs::read_to_string(format!("{path}.scale")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1.0);
        events.push(PowerEvent { domain: domain_of(short), code, scale });
    }
    events.sort_by(|a, b| a.domain.cmp(&b.domain));
    Ok(events)
}

fn all_power_zones() -> Result<Vec<PowerZone>, Error> {
    fn walk(dir: &str, socket: Option<u32>, out: &mut Vec<PowerZone>) -> io::Result<()> {
        for entry in fs::read_dir(dir)?.flatten() {
            let fname = entry.file_name().to_string_lossy().into_owned();
            if !fname.starts_with("intel-rapl:") {
                continue;
            }
            let path = entry.path().to_string_lossy().into_owned();
            let name = fs::read_to_string(format!("{path}/name"))?.trim().to_string();
            let own = name.strip_prefix("package-").and_then(|n| n.parse().ok());
            let domain = if own.is_some() { "package".to_string() } else { name.clone() };
            out.push(PowerZone { domain, path: path.clone(), socket: own.or(socket).unwrap_or(0) });
            walk(&path, own.or(socket), out)?;
        }
        Ok(())
    }
    let mut zones = Vec::new();
    walk(POWERCAP_RAPL_PATH, None, &mut zones).map_err(Error::from)?;
    zones.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(zones)
}

fn first_cpu(mask: &str) -> i32 {
    mask.trim().split([',', '-']).next().and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn open_perf(events: &[PowerEvent]) -> Result<RaplProbe, Error> {
    let pmu_type: u32 = fs::read_to_string(format!("{PERF_SYSFS_DIR}/type"))
        .map_err(|e| Error(vec![format!("Failed to read \"{PERF_SYSFS_DIR}/type\""), e.to_string()]))?
        .trim().parse().map_err(|_| Error::new(format!("Failed to parse \"{PERF_SYSFS_DIR}/type\"")))?;
    let cpu = first_cpu(&fs::read_to_string(format!("{PERF_SYSFS_DIR}/cpumask")).unwrap_or_default());
    let mut opened = Vec::new();
    for e in events {
        // pid -1, one CPU: every process on that CPU's package (CAP_PERFMON at paranoid 1 and 2).
        let fd = sys::perf_event_open(pmu_type, e.code, -1, cpu).map_err(Error::from)?;
        opened.push((fd, e.domain.clone(), e.scale, 0, None));
    }
    Ok(RaplProbe::Perf(opened))
}

fn perf_refused(e: &Error) {
    let app = env_exe();
    log("WARN", "plugin_rapl::perf_event", &format!(
        "I could not use perf_events to read RAPL energy counters: {}.\n\
         This warning is probably caused by insufficient privileges.\n\
         To fix this, you have 3 possibilities:\n\
         1. Grant the CAP_PERFMON (CAP_SYS_ADMIN on Linux < 5.8) capability to the agent binary.\n    \
         sudo setcap cap_perfmon=ep \"{app}\"        \n    \
         Note: to grant multiple capabilities to the binary, you must put all the capabilities in the same command.\n    \
         sudo setcap \"cap_sys_nice+ep cap_perfmon=ep\" \"{app}\" \n        \n\
         2. Change a kernel setting to allow every process to read the perf_events.\n    \
         sudo sysctl -w kernel.perf_event_paranoid=0\n        \n\
         3. Run the agent as root (not recommanded).", e.0[0]));
}

fn env_exe() -> String {
    std::env::current_exe().and_then(|p| p.canonicalize()).map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "path/to/agent".into())
}

fn open_powercap(zones: &[PowerZone]) -> Result<RaplProbe, Error> {
    if zones.is_empty() {
        return Err(Error::new("At least one power zone is required for PowercapProbe"));
    }
    let mut opened = Vec::new();
    for z in zones {
        let energy = format!("{}/energy_uj", z.path);
        let result = File::open(&energy)
            .map_err(|e| Error(vec![format!("Could not open {energy}. {POWERCAP_PERMISSION_ADVICE}"), e.to_string()]))
            .and_then(|f| {
                let max_path = format!("{}/max_energy_range_uj", z.path);
                let max = fs::read_to_string(&max_path).map_err(|e| {
                    Error(vec![format!("Could not read {max_path}. {POWERCAP_PERMISSION_ADVICE}"), e.to_string()])
                })?;
                Ok((f, max.trim().parse().unwrap_or(u64::MAX)))
            });
        match result {
            Ok((f, max)) => opened.push((f, z.domain.clone(), z.socket, max, None)),
            Err(e) => {
                log("ERROR", "plugin_rapl::powercap", &format!(
                    "I could not use the powercap sysfs to read RAPL energy counters: {}.\n\
                     This is probably caused by insufficient privileges.\n\
                     Please check that you have read access to everything in '{POWERCAP_RAPL_PATH}'.\n\n\
                     A solution could be:\n    sudo chmod a+r -R {POWERCAP_RAPL_PATH}", e.0[0]));
                return Err(e);
            }
        }
    }
    Ok(RaplProbe::Powercap(opened))
}

fn rapl_start(config: &Table) -> Result<RaplProbe, Error> {
    let mut use_perf = !boolean(config, "no_perf_events", false);
    let mut check_consistency = true;
    if fs::metadata(PERF_SYSFS_DIR).is_err() {
        check_consistency = false;
        let msg = format!("{PERF_SYSFS_DIR} does not exist, the Intel RAPL PMU module may not be enabled. Is your Linux kernel too old?");
        if use_perf {
            log("ERROR", "plugin_rapl", &msg);
            log("WARN", "plugin_rapl", "Because of the previous error, I will disable perf_events and fall back to powercap.");
            use_perf = false;
        } else {
            log("WARN", "plugin_rapl", &msg);
            log("WARN", "plugin_rapl", "I will not use perf_events to check the consistency of the RAPL interfaces.");
        }
    }
    let (events, zones) = (all_power_events(), all_power_zones());
    let consistency = "The consistency of the RAPL domains reported by the different interfaces of the Linux kernel \
        cannot be checked (this is useful to work around bugs in some kernel versions on some machines).";
    let (domains, origin, zones, events) = match (events, zones) {
        (Ok(ev), Ok(zo)) => {
            let origin = if check_consistency { "" } else { " (from powercap)" };
            let d: Vec<String> = if check_consistency { ev.iter().map(|e| e.domain.clone()).collect() } else {
                zo.iter().map(|z| z.domain.clone()).collect()
            };
            (d, origin, zo, ev)
        }
        (Ok(ev), Err(pe)) => {
            log("ERROR", "plugin_rapl::consistency", &format!(
                "Cannot read the list of RAPL domains available via the powercap interface: {}.", pe.0.join(": ")));
            log("WARN", "plugin_rapl::consistency", consistency);
            (ev.iter().map(|e| e.domain.clone()).collect(), " (from perf_events)", Vec::new(), ev)
        }
        (Err(fe), Ok(zo)) => {
            log("WARN", "plugin_rapl::consistency", &format!(
                "Cannot read the list of RAPL domains available via the perf_events interface: {}.", fe.0.join(": ")));
            log("WARN", "plugin_rapl::consistency", consistency);
            if use_perf {
                log("WARN", "plugin_rapl::consistency", "Because of the previous error, I will disable perf_events and fall back to powercap.");
            }
            use_perf = false;
            (zo.iter().map(|z| z.domain.clone()).collect(), " (from powercap)", zo, Vec::new())
        }
        (Err(fe), Err(pe)) => {
            log("ERROR", "plugin_rapl::consistency", &format!(
                "I could use neither perf_events nor powercap.\nperf_events error: {}\n\nCaused by:\n    {}\npowercap error: {}",
                fe.0[0], fe.0[1..].join("\n    "), pe.0.join(": ")));
            return Err(Error(vec![format!(
                "Both perf_events and powercap failed, unable to read RAPL counters: {}\n{}", fe.0[0], pe.0[0])]));
        }
    };
    let mut unique: Vec<String> = domains;
    unique.dedup();
    log("INFO", "plugin_rapl", &format!("Available RAPL domains{origin}: {}", unique.join(", ")));
    if use_perf {
        match open_perf(&events) {
            Ok(probe) => Ok(probe),
            Err(e) => {
                perf_refused(&e);
                log("WARN", "plugin_rapl", "I will fallback to the powercap sysfs, but perf_events is more efficient \
                    (see https://hal.science/hal-04420527).");
                open_powercap(&zones)
            }
        }
    } else {
        open_powercap(&zones).map_err(|e| e.context("Failed to create RAPL probe based on powercap"))
    }
}

fn rapl_poll(probe: &mut RaplProbe, out: &mut Vec<Point>) {
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    let mut push = |domain: &str, socket: u32, joules: f64, out: &mut Vec<Point>| {
        let mut p = point("rapl_consumed_energy", Unit::Joule, f64_string(joules), ("local_machine", String::new()));
        p.resource = if domain == "dram" { ("dram", socket.to_string()) } else { ("cpu_package", socket.to_string()) };
        p.attrs.push(("domain", domain.to_string()));
        out.push(p);
        *totals.entry(format!("{domain}_total")).or_default() += joules;
    };
    match probe {
        RaplProbe::Perf(events) => {
            for (fd, domain, scale, socket, prev) in events.iter_mut() {
                if let Ok(v) = fd.read_counter() {
                    if let Some(before) = prev.replace(v) {
                        push(domain, *socket, v.wrapping_sub(before) as f64 * *scale, out);
                    }
                }
            }
        }
        RaplProbe::Powercap(zones) => {
            for (file, domain, socket, max, prev) in zones.iter_mut() {
                let mut text = String::new();
                if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
                    if let Ok(v) = text.trim().parse::<u64>() {
                        if let Some(before) = prev.replace(v) {
                            let diff = if v >= before { v - before } else { v + (*max - before) };
                            push(domain, *socket, diff as f64 * 1e-6, out);
                        }
                    }
                }
            }
        }
    }
    for (domain, total) in totals {
        let mut p = point("rapl_consumed_energy", Unit::Joule, f64_string(total), ("local_machine", String::new()));
        p.attrs.push(("domain", domain));
        out.push(p);
    }
}

// ---- procfs (plugins/procfs/src): kernel, memory, processes ---------------------------------------

const TICKS_PER_SECOND: f64 = 100.0; // sysconf(_SC_CLK_TCK) on Linux

struct ProcessProbe {
    pid: u32,
    interval: Duration,
    next: Instant,
    previous: Option<(Instant, u64, u64)>,
}

enum Watch {
    /// strategy "watcher": every process the groups accept, found by scanning /proc.
    Watcher { refresh: Duration, next: Instant, groups: Vec<Group>, seen: HashMap<u32, String>, broken: bool },
    /// strategy "event": only the processes the agent announces (exec, watch).
    Event { interval: Duration },
}

struct Group {
    pid: Option<u32>,
    ppid: Option<u32>,
    exe_regex: Option<String>,
    interval: Duration,
}

struct Procfs {
    kernel: Option<(Duration, Instant, Option<u64>)>,
    memory: Option<(Duration, Instant, Vec<String>)>,
    watch: Option<Watch>,
    probes: Vec<ProcessProbe>,
    n_cores: f64,
}

fn procfs_start(t: &Table) -> Procfs {
    let now = Instant::now();
    let (kernel, memory, processes) = (sub(t, "kernel"), sub(t, "memory"), sub(t, "processes"));
    let metrics = match toml::get(memory, "metrics") {
        Some(Value::Array(items)) => items.iter().filter_map(|v| if let Value::Str(s) = v { Some(s.clone()) } else { None }).collect(),
        _ => Vec::new(),
    };
    let watch = if boolean(processes, "enabled", true) {
        Some(if string(processes, "strategy") == "event" {
            Watch::Event { interval: dur(sub(processes, "events"), "poll_interval") }
        } else {
            let groups = match toml::get(processes, "groups") {
                Some(Value::Array(items)) => items.iter().filter_map(|g| match g {
                    Value::Table(g) => Some(Group {
                        pid: match toml::get(g, "pid") { Some(Value::Int(i)) => Some(*i as u32), _ => None },
                        ppid: match toml::get(g, "ppid") { Some(Value::Int(i)) => Some(*i as u32), _ => None },
                        exe_regex: Some(string(g, "exe_regex")).filter(|s| !s.is_empty()),
                        interval: dur(g, "poll_interval"),
                    }),
                    _ => None,
                }).collect(),
                _ => Vec::new(),
            };
            Watch::Watcher { refresh: dur(processes, "refresh_interval"), next: now, groups, seen: HashMap::new(), broken: false }
        })
    } else {
        None
    };
    let n_cores = fs::read_to_string("/proc/stat").map(|s| s.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count()).unwrap_or(1).max(1) as f64;
    Procfs {
        kernel: boolean(kernel, "enabled", true).then(|| (dur(kernel, "poll_interval"), now, None)),
        memory: boolean(memory, "enabled", true).then(|| (dur(memory, "poll_interval"), now, metrics)),
        watch,
        probes: Vec::new(),
        n_cores,
    }
}

/// (utime, stime) of /proc/PID/stat, in ticks; the error kind tells vanished from refused (hidepid).
fn read_stat(pid: u32) -> io::Result<(u64, u64, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = text.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    // after the comm: state(0) ppid(1) ... utime(11) stime(12)
    Ok((num(11), num(12), num(1) as u32))
}

/// A tiny regex matcher for exe_regex: literals, `.`, `*`, `^`, `$` (what process filters use).
fn regex_match(re: &str, text: &str) -> bool {
    fn here(re: &[char], t: &[char]) -> bool {
        match re {
            [] => true,
            ['$'] => t.is_empty(),
            [c, '*', rest @ ..] => {
                let mut i = 0;
                loop {
                    if here(rest, &t[i..]) {
                        return true;
                    }
                    if i < t.len() && (*c == '.' || t[i] == *c) { i += 1 } else { return false }
                }
            }
            ['\\', c, rest @ ..] => !t.is_empty() && t[0] == *c && here(rest, &t[1..]),
            [c, rest @ ..] => !t.is_empty() && (*c == '.' || t[0] == *c) && here(rest, &t[1..]),
        }
    }
    let (re, t): (Vec<char>, Vec<char>) = (re.chars().collect(), text.chars().collect());
    if re.first() == Some(&'^') {
        return here(&re[1..], &t);
    }
    (0..=t.len()).any(|i| here(&re, &t[i..]))
}

impl Procfs {
    fn watch_pid(&mut self, pid: u32, interval: Duration) {
        if !self.probes.iter().any(|p| p.pid == pid) {
            log("DEBUG", "plugin_procfs::process", &format!("Starting to monitor process with pid {pid}"));
            self.probes.push(ProcessProbe { pid, interval, next: Instant::now(), previous: None });
        }
    }

    /// StartConsumerMeasurement from exec or watch: the event strategy starts measuring the process.
    fn on_start_consumer(&mut self, pid: u32) {
        if let Some(Watch::Event { interval }) = self.watch {
            self.watch_pid(pid, interval);
        }
    }

    fn refresh(&mut self) {
        let Some(Watch::Watcher { groups, seen, broken, .. }) = &mut self.watch else { return };
        if *broken {
            return;
        }
        let Ok(dir) = fs::read_dir("/proc") else { return };
        let mut new = Vec::new();
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let path = format!("/proc/{pid}/stat");
            let stat = match read_stat(pid) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    log("WARN", "plugin_procfs::process", &format!("cannot read process statistics from {path}: permission denied"));
                    continue;
                }
                Err(_) => continue,
            };
            let start = fs::read_to_string(&path).ok().and_then(|s| s.rsplit(')').next().and_then(|a| a.split_whitespace().nth(19).map(str::to_string))).unwrap_or_default();
            if seen.get(&pid) == Some(&start) {
                continue;
            }
            seen.insert(pid, start);
            for g in groups.iter() {
                if g.pid.is_some_and(|p| p != pid) || g.ppid.is_some_and(|p| p != stat.2) {
                    continue;
                }
                if let Some(re) = &g.exe_regex {
                    let exe_path = format!("/proc/{pid}/exe");
                    match fs::read_link(&exe_path) {
                        Ok(exe) if regex_match(re, &exe.to_string_lossy()) => {}
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                            log("WARN", "plugin_procfs::process", &format!(
                                "cannot apply filter {{ exe_regex: {re:?} }} on process {pid}: permission denied on {exe_path}"));
                            continue;
                        }
                        Err(e) => {
                            // Upstream's refresh fails on this (a kernel thread has no exe): the watcher stops.
                            log("ERROR", "alumet::pipeline", &format!(
                                "Fatal error when polling process-watcher: error while trying to apply filter on process {pid}: {e}"));
                            *broken = true;
                            return;
                        }
                    }
                }
                new.push((pid, g.interval));
                break;
            }
        }
        for (pid, interval) in new {
            self.watch_pid(pid, interval);
        }
    }

    fn poll(&mut self, now: Instant, force: bool, out: &mut Vec<Point>) {
        if let Some((interval, next, prev)) = &mut self.kernel {
            if force || now >= *next {
                *next = now + *interval;
                if let Ok(text) = fs::read_to_string("/proc/stat") {
                    let v: Vec<u64> = text.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|s| s.parse().ok()).collect();
                    let busy: u64 = v.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum();
                    if let Some(before) = prev.replace(busy) {
                        let ms = (busy.saturating_sub(before) as f64) * 1000.0 / TICKS_PER_SECOND;
                        out.push(point("kernel_cpu_time", Unit::MilliSecond, format!("{}", ms as u64), ("local_machine", String::new())));
                    }
                }
            }
        }
        if let Some((interval, next, metrics)) = &mut self.memory {
            if force || now >= *next {
                *next = now + *interval;
                let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
                for line in text.lines() {
                    let (key, rest) = line.split_once(':').unwrap_or(("", ""));
                    if metrics.iter().any(|m| m == key) {
                        let kb: u64 = rest.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0);
                        out.push(point(&snake_case(key), Unit::Byte, (kb * 1024).to_string(), ("local_machine", String::new())));
                    }
                }
            }
        }
        if let Some(Watch::Watcher { refresh, next, .. }) = &mut self.watch {
            if now >= *next {
                *next = now + *refresh;
                self.refresh();
            }
        }
        let n_cores = self.n_cores;
        self.probes.retain_mut(|p| {
            if !force && now < p.next {
                return true;
            }
            p.next = now + p.interval;
            let Ok((utime, stime, _)) = read_stat(p.pid) else { return false };
            let consumer = ("process", p.pid.to_string());
            let ns = 1e9 / TICKS_PER_SECOND;
            let (du, ds) = match p.previous {
                Some((_, u, s)) => (utime.saturating_sub(u), stime.saturating_sub(s)),
                None => (utime, stime),
            };
            for (kind, ticks) in [("user", du), ("system", ds), ("guest", 0)] {
                let mut pt = point("cpu_time_delta", Unit::NanoSecond, ((ticks as f64 * ns) as u64).to_string(), consumer.clone());
                pt.attrs.push(("kind", kind.into()));
                out.push(pt);
            }
            if let Some((t0, _, _)) = p.previous {
                let dt = now.duration_since(t0).as_nanos().max(1) as f64;
                let (u, s) = (du as f64 * ns, ds as f64 * ns);
                for (kind, v) in [("user", u), ("system", s), ("total", u + s)] {
                    let mut pt = point("cpu_percent", Unit::Percent, f64_string(100.0 * (v / dt) / n_cores), consumer.clone());
                    pt.attrs.push(("kind", kind.into()));
                    out.push(pt);
                }
            }
            if let Ok(statm) = fs::read_to_string(format!("/proc/{}/statm", p.pid)) {
                let pages: Vec<u64> = statm.split_whitespace().filter_map(|s| s.parse().ok()).collect();
                for (kind, i) in [("resident", 1), ("shared", 2), ("virtual", 0)] {
                    let mut pt = point("memory_usage", Unit::Byte, (pages.get(i).copied().unwrap_or(0) * 4096).to_string(), consumer.clone());
                    pt.attrs.push(("kind", kind.into()));
                    out.push(pt);
                }
            }
            p.previous = Some((now, utime, stime));
            true
        });
    }
}

fn snake_case(s: &str) -> String {
    if s.contains('_') {
        return s.to_ascii_lowercase();
    }
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 && (chars[i - 1].is_ascii_lowercase()
            || chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()) && chars[i - 1].is_ascii_uppercase()) {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

// ---- the agent ------------------------------------------------------------------------------------

enum Running {
    Rapl(RaplProbe, Duration, Instant),
    Procfs(Procfs),
    Csv,
    Other,
}

/// Upstream's main() after the CLI: commands without config, config, plugins, start, the command.
pub fn run(cli: Cli) -> Result<i32, Error> {
    let all: Vec<&str> = ALL.iter().map(|(n, _)| *n).collect();
    let cli_enabled: Option<Vec<&str>> =
        cli.plugins.as_ref().map(|p| all.iter().copied().filter(|n| p.iter().any(|q| q == n)).collect());
    let defaults_for: Vec<&str> = cli_enabled.clone().unwrap_or_else(|| all.clone());
    match cli.command {
        Command::ConfigRegen => {
            fs::write(&cli.config, default_config(&defaults_for))?;
            log("INFO", "alumet_agent", &format!("Default configuration file written to: {}", cli.config));
            return Ok(0);
        }
        Command::PluginsList { status: false } => {
            println!("Available plugins:");
            for (n, v) in ALL {
                println!("- {n} v{v}");
            }
            println!("\nEdit the configuration file or use the --plugins flag to enable/disable plugins.");
            return Ok(0);
        }
        _ => {}
    }
    let mut config = crate::load_config(&cli, &defaults_for)?;
    let plugins_table = match toml::remove(&mut config, "plugins") {
        Some(Value::Table(t)) => t,
        Some(_) => return Err(Error(vec!["invalid plugins config".into(), "invalid config".into(),
            "invalid type for 'plugins': expected table".into()])),
        None => Table::new(),
    };
    // Config order first (upstream reorders the plugins so), then the others in metadata order.
    let mut order: Vec<(String, bool, Table)> = Vec::new();
    for (name, section) in plugins_table {
        let Value::Table(mut t) = section else {
            return Err(Error(vec!["invalid plugins config".into(), "invalid config".into(),
                format!("invalid type for 'plugins.{name}': expected table")]));
        };
        if !all.contains(&name.as_str()) {
            return Err(Error(vec!["invalid plugins config".into(), format!("unknown plugin '{name}' in configuration")]));
        }
        let enabled = match toml::remove(&mut t, "enabled").or_else(|| toml::remove(&mut t, "enable")) {
            Some(Value::Bool(b)) => b,
            None => true,
            Some(_) => return Err(Error(vec!["invalid plugins config".into(), "invalid config".into(),
                format!("invalid type for 'plugins.{name}.enabled': expected boolean")])),
        };
        let enabled = cli_enabled.as_ref().map_or(enabled, |c| c.contains(&name.as_str()));
        order.push((name, enabled, t));
    }
    for name in cli_enabled.iter().flatten() {
        if !order.iter().any(|(n, _, _)| n == name) {
            let body = DEFAULTS.iter().find(|(n, _)| n == name).map(|(_, b)| *b).unwrap_or("");
            let table = toml::parse(&format!("[plugins.{name}]\n{body}")).ok()
                .and_then(|mut t| match toml::remove(&mut t, "plugins") { Some(Value::Table(mut p)) => toml::remove(&mut p, name), _ => None })
                .and_then(|v| if let Value::Table(t) = v { Some(t) } else { None }).unwrap_or_default();
            order.push((name.to_string(), true, table));
        }
    }
    if let Command::PluginsList { status: true } = cli.command {
        println!("Enabled plugins:");
        order.iter().filter(|p| p.1).for_each(|(n, _, _)| println!("- {n} v{}", version_of(n)));
        println!("\nDisabled plugins:");
        ALL.iter().filter(|(n, _)| !order.iter().any(|p| p.1 && p.0 == *n)).for_each(|(n, v)| println!("- {n} v{v}"));
        println!("\nEdit the configuration file or use the --plugins flag to enable/disable plugins.");
        return Ok(0);
    }
    let enabled: Vec<(String, Table)> = order.into_iter().filter(|p| p.1).map(|(n, _, t)| (n, t)).collect();
    let agent = start(&enabled).map_err(|e| e.context("startup failure"))?;
    Ok(agent.command(cli.command))
}

struct Agent {
    plugins: Vec<(String, Running)>,
    csv: Option<Csv>,
}

fn start(enabled: &[(String, Table)]) -> Result<Agent, Error> {
    log("INFO", "alumet::agent::builder", "Initializing the plugins...");
    for (name, t) in enabled {
        let failed = |e: Error| e.context(format!("plugin failed to initialize: {name} v{}", version_of(name)));
        check_config(name, t).map_err(|e| {
            let mut chain = vec!["invalid configuration".to_string()];
            let (ty, msg) = e.split_once('\n').unwrap_or(("?", &e));
            chain.push(format!("error when deserializing ConfigTable to {ty}"));
            chain.push(msg.to_string());
            failed(Error(chain))
        })?;
        if name == "nvml" {
            // nvml-wrapper's Nvml::init(): dlopen of its LIB_PATH, then nvmlInit_v2.
            let count = sys::nvml_device_count("libnvidia-ml.so.1").map_err(|e| {
                failed(Error(vec!["failed to init the nvml library".into(), "failed to load nvml".into(),
                    "a libloading error occurred".into(), e]))
            })?;
            if count == 0 {
                return Err(Error(vec![format!("plugin failed to start: nvml v{}", version_of("nvml")),
                    "No NVML-compatible GPU found. If your device is a Jetson edge device, please disable the `nvml` feature of the plugin.".into()]));
            }
        }
    }
    match enabled.len() {
        0 => log("WARN", "alumet::agent::builder", "No plugin has been initialized because they were all disabled in the config. Please check your configuration."),
        1 => log("INFO", "alumet::agent::builder", "1 plugin initialized."),
        n => log("INFO", "alumet::agent::builder", &format!("{n} plugins initialized.")),
    }
    log("INFO", "alumet::agent::builder", "Starting the plugins...");
    let mut agent = Agent { plugins: Vec::new(), csv: None };
    let now = Instant::now();
    for (name, t) in enabled {
        let failed = |e: Error| e.context(format!("plugin failed to start: {name} v{}", version_of(name)));
        let running = match name.as_str() {
            "rapl" => Running::Rapl(rapl_start(t).map_err(failed)?, dur(t, "poll_interval"), now),
            "procfs" => Running::Procfs(procfs_start(t)),
            "csv" => {
                let path = string(t, "output_path");
                let file = File::create(&path).map_err(|e| {
                    failed(Error(vec![format!("failed to open file for writing {path:?}"), e.to_string()]))
                })?;
                let ch = |k: &str| string(t, k).chars().next().unwrap_or(';');
                agent.csv = Some(Csv { file, header: None, force_flush: boolean(t, "force_flush", true),
                    append_unit: boolean(t, "append_unit_to_metric_name", true),
                    display: boolean(t, "use_unit_display_name", true), delimiter: ch("csv_delimiter"),
                    late: ch("csv_late_delimiter") });
                Running::Csv
            }
            _ => Running::Other,
        };
        agent.plugins.push((name.clone(), running));
    }
    let started: Vec<String> = agent.plugins.iter().map(|(n, _)| format!("    - {n} v{}", version_of(n))).collect();
    let disabled: Vec<String> = ALL.iter().filter(|(n, _)| !agent.plugins.iter().any(|(p, _)| p == n))
        .map(|(n, v)| format!("    - {n} v{v}")).collect();
    let plural = |n: usize, w: &str| if n == 1 { format!("{n} {w}") } else { format!("{n} {w}s") };
    log("INFO", "alumet::agent::builder", &format!(
        "Plugin startup complete.\n🧩 {} started:\n{}\n\n⭕ {} disabled:\n{}\n",
        plural(started.len(), "plugin"), started.join("\n"), plural(disabled.len(), "plugin"), disabled.join("\n")));
    log("INFO", "alumet::agent::builder", "Running pre-pipeline-start hooks...");
    log("INFO", "alumet::agent::builder", "Starting the measurement pipeline...");
    log("INFO", "alumet::agent::builder", "🔥 ALUMET measurement pipeline has started.");
    log("INFO", "alumet::agent::builder", "Running post-pipeline-start hooks...");
    for (_, p) in &agent.plugins {
        match p {
            Running::Procfs(Procfs { watch: Some(Watch::Watcher { .. }), .. }) => {
                log("INFO", "plugin_procfs", "Starting system-wide process watcher.")
            }
            Running::Procfs(Procfs { watch: Some(Watch::Event { .. }), .. }) => {
                log("INFO", "plugin_procfs", "Setting up on-demand process watcher.")
            }
            _ => {}
        }
    }
    log("INFO", "alumet::agent::builder", "🔥 ALUMET agent is ready.");
    Ok(agent)
}

impl Agent {
    fn measure(&mut self, force: bool) {
        let now = Instant::now();
        let mut points = Vec::new();
        for (_, p) in self.plugins.iter_mut() {
            match p {
                Running::Rapl(probe, interval, next) if force || now >= *next => {
                    *next = now + *interval;
                    rapl_poll(probe, &mut points);
                }
                Running::Procfs(procfs) => procfs.poll(now, force, &mut points),
                _ => {}
            }
        }
        if let Some(csv) = &mut self.csv {
            if let Err(e) = csv.write(&points) {
                log("ERROR", "alumet::pipeline::elements::output", &format!("Error in output plugin csv: {e}"));
            }
        }
    }

    fn start_consumer(&mut self, pid: u32) {
        for (name, p) in self.plugins.iter_mut() {
            if let Running::Procfs(procfs) = p {
                procfs.on_start_consumer(pid);
            }
            if name == "perf" {
                log("INFO", "plugin_perf", &format!("Starting to observe Process {{ pid: {pid} }}..."));
            }
        }
    }

    /// Measure until `done` says stop, a signal arrives, or forever.
    fn measure_until(&mut self, mut done: impl FnMut() -> bool) {
        sys::catch_stop_signals();
        while !done() && !sys::stop_requested() {
            self.measure(false);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        log("INFO", "alumet::agent::builder", "Stopping the plugins...");
        for (name, _) in &self.plugins {
            log("INFO", "alumet::agent::builder", &format!("Stopping plugin {name} v{}", version_of(name)));
        }
        log("INFO", "alumet::agent::builder", "All plugins have stopped.");
    }

    fn command(mut self, command: Command) -> i32 {
        match command {
            Command::Exec { ignore_exit_code, program, args } => {
                self.measure(true);
                let mut child = match std::process::Command::new(&program).args(&args).spawn() {
                    Ok(c) => c,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => panic!("Command '{program}' not found"),
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => panic!("Permission denied for '{program}'"),
                    Err(e) => panic!("failed to spawn process '{program}': {e}"),
                };
                log("INFO", "alumet::agent::exec", &format!("Child process '{program}' spawned with pid {}.", child.id()));
                self.start_consumer(child.id());
                let mut status = None;
                self.measure_until(|| { status = child.try_wait().ok().flatten(); status.is_some() });
                let status = status.unwrap_or_else(|| child.wait().expect("wait for the child"));
                log("INFO", "alumet::agent::exec", &format!("Child process exited with {status}, Alumet will now stop."));
                self.measure(true);
                log("INFO", "alumet::agent::exec", "Publishing EndConsumerMeasurement event");
                self.stop();
                if ignore_exit_code || status.success() {
                    0
                } else if let Some(code) = status.code().and_then(|c| u8::try_from(c).ok()) {
                    log("WARN", "alumet_agent", "Propagating failure exit code from the child process. Use `exec --ignore-exit-code` to disable the propagation.");
                    i32::from(code)
                } else {
                    log("WARN", "alumet_agent", &format!("Child process exited with {status}, which cannot be propagated. Returning ExitCode::FAILURE"));
                    1
                }
            }
            Command::Watch(pid) => {
                let path = format!("/proc/{pid}");
                if let Err(e) = fs::metadata(&path) {
                    panic!("PID: {pid} seems to be not found, error: {e}");
                }
                self.measure(true);
                log("INFO", "alumet::agent::watch", &format!("Watch process spawned with pid {pid}."));
                self.start_consumer(pid);
                self.measure_until(|| fs::metadata(&path).is_err());
                log("INFO", "alumet::agent::watch", "Watched process exited, Alumet will now stop.");
                log("INFO", "alumet::agent::watch", "Publishing EndConsumerMeasurement event");
                self.stop();
                0
            }
            _ => {
                self.measure_until(|| false);
                self.stop();
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages() {
        let t = toml::parse("poll_interval = \"1s\"\nflush_interval = \"5s\"\nno_perf_events = false\nfoo = 1\n").unwrap();
        assert_eq!(check_config("rapl", &t).unwrap_err(),
            "plugin_rapl::Config\nunknown field `foo`, expected one of `poll_interval`, `flush_interval`, `no_perf_events`");
        let t = toml::parse("poll_interval = \"1s\"\n").unwrap();
        assert_eq!(check_config("rapl", &t).unwrap_err(), "plugin_rapl::Config\nmissing field `flush_interval`");
    }

    #[test]
    fn golden_profiles_pass_the_checks() {
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../golden");
        let Ok(dir) = fs::read_dir(&golden) else { return }; // only in alumet-setup's checkout
        for f in dir.flatten() {
            let mut t = toml::parse(&fs::read_to_string(f.path()).unwrap()).unwrap();
            let Some(Value::Table(plugins)) = toml::remove(&mut t, "plugins") else { panic!() };
            for (name, v) in plugins {
                let Value::Table(v) = v else { panic!() };
                assert_eq!(check_config(&name, &v), Ok(()), "{:?} {name}", f.path());
            }
        }
    }

    #[test]
    fn default_config_is_valid() {
        let mut t = toml::parse(&default_config(&["csv", "rapl", "perf", "procfs", "nvml"])).unwrap();
        let Some(Value::Table(plugins)) = toml::remove(&mut t, "plugins") else { panic!() };
        assert_eq!(plugins.len(), 5);
        for (name, v) in plugins {
            let Value::Table(v) = v else { panic!() };
            assert_eq!(check_config(&name, &v), Ok(()), "{name}");
        }
    }

    #[test]
    fn durations_regex_snake_case() {
        assert_eq!(parse_duration("1m 30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("soon"), None);
        assert!(regex_match("^/usr/bin/.*sleep$", "/usr/bin/sleep"));
        assert!(regex_match("python", "/usr/bin/python3.11") && !regex_match("^python", "/usr/bin/python3"));
        assert_eq!(snake_case("MemAvailable"), "mem_available");
        assert_eq!(snake_case("SwapCached"), "swap_cached");
    }
}
