//! The few system calls the stand-in makes as the real agent does: perf_event_open, dlopen, signals.
use std::ffi::{CStr, CString};
use std::io;
use std::os::raw::{c_char, c_int, c_long, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

unsafe extern "C" {
    fn syscall(number: c_long, ...) -> c_long;
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlerror() -> *const c_char;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
    // libcrypto, found through pkg-config by build.rs: makes the link against OpenSSL real.
    fn OpenSSL_version(t: c_int) -> *const c_char;
}

#[cfg(target_arch = "x86_64")]
const SYS_PERF_EVENT_OPEN: c_long = 298;
#[cfg(target_arch = "aarch64")]
const SYS_PERF_EVENT_OPEN: c_long = 241;
const PERF_ATTR_SIZE_VER5: usize = 112;
const RTLD_NOW: c_int = 2;

/// An opened perf event; closed when dropped.
pub struct PerfEvent(c_int);

/// perf_event_open(2) with a zeroed attr of `event_type` and `config`, as upstream's rapl plugin opens
/// its energy events: pid -1 (every process) on one CPU, which needs CAP_PERFMON at paranoid 1 and 2.
pub fn perf_event_open(event_type: u32, config: u64, pid: i32, cpu: i32) -> io::Result<PerfEvent> {
    let mut attr = [0u8; PERF_ATTR_SIZE_VER5];
    attr[0..4].copy_from_slice(&event_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&(PERF_ATTR_SIZE_VER5 as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&config.to_ne_bytes());
    let fd = unsafe { syscall(SYS_PERF_EVENT_OPEN, attr.as_mut_ptr(), pid as c_int, cpu as c_int, -1 as c_int, 0u64) };
    if fd < 0 { Err(io::Error::last_os_error()) } else { Ok(PerfEvent(fd as c_int)) }
}

impl PerfEvent {
    pub fn read_counter(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        let n = unsafe { read(self.0, buf.as_mut_ptr().cast(), 8) };
        if n != 8 { Err(io::Error::last_os_error()) } else { Ok(u64::from_ne_bytes(buf)) }
    }
}

impl Drop for PerfEvent {
    fn drop(&mut self) {
        unsafe { close(self.0) };
    }
}

/// dlopen(name) then `nvmlInit_v2` and `nvmlDeviceGetCount_v2`, as nvml-wrapper does: the GPU count.
pub fn nvml_device_count(name: &str) -> Result<u32, String> {
    let cname = CString::new(name).map_err(|e| e.to_string())?;
    let handle = unsafe { dlopen(cname.as_ptr(), RTLD_NOW) };
    if handle.is_null() {
        let err = unsafe { dlerror() };
        let text = if err.is_null() { String::from("unknown dlopen error") } else {
            unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned()
        };
        return Err(text);
    }
    let sym = |s: &str| unsafe { dlsym(handle, CString::new(s).unwrap().as_ptr()) };
    let (init, count) = (sym("nvmlInit_v2"), sym("nvmlDeviceGetCount_v2"));
    if init.is_null() || count.is_null() {
        return Err(String::from("a symbol is missing in the NVML library"));
    }
    let init: extern "C" fn() -> c_int = unsafe { std::mem::transmute(init) };
    let count: extern "C" fn(*mut u32) -> c_int = unsafe { std::mem::transmute(count) };
    let rc = init();
    if rc != 0 {
        return Err(format!("nvmlInit_v2 returned {rc}"));
    }
    let mut n = 0u32;
    match count(&mut n) {
        0 => Ok(n),
        rc => Err(format!("nvmlDeviceGetCount_v2 returned {rc}")),
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM ask the agent to stop (systemd's stop, Ctrl+C).
pub fn catch_stop_signals() {
    unsafe {
        signal(2, on_signal);
        signal(15, on_signal);
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

pub fn openssl_version() -> String {
    unsafe { CStr::from_ptr(OpenSSL_version(0)) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The raw syscall really reaches the kernel: a CPU-wide software event (pid -1, CPU 0) either opens
    /// and counts, or is refused with EACCES/EPERM (perf_event_paranoid > 0 without CAP_PERFMON).
    #[test]
    fn cpu_wide_software_event() {
        match perf_event_open(1, 0, -1, 0) {
            Ok(event) => assert!(event.read_counter().is_ok()),
            Err(e) => assert!(matches!(e.raw_os_error(), Some(1 | 13)), "{e}"),
        }
    }

    #[test]
    fn own_task_clock_opens_at_paranoid_2() {
        let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap_or_default();
        if paranoid.trim().parse::<i32>().is_ok_and(|p| p <= 2) {
            let event = perf_event_open(1, 1, 0, -1).expect("own task-clock event");
            event.read_counter().unwrap();
        }
    }

    #[test]
    fn missing_library_is_a_dlopen_error() {
        let err = nvml_device_count("libalumet-standin-absent.so.1").unwrap_err();
        assert!(err.contains("libalumet-standin-absent.so.1"), "{err}");
    }
}
