//! The WASI preview 1 subset Envoy's proxy-wasm host provides, written out by hand:
//! stdout/stderr become log lines, environ comes from the VM's configured
//! variables, clocks read the Host's test clock, nothing touches the filesystem.

use wasmtime::Result;

use super::abi::Registry;
use super::memory::{read, write, write_u32, write_u64, Ctx};
use super::model::LogLevel;
use super::state::START_NANOS;

const MODULE: &str = "wasi_snapshot_preview1";

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;

/// proxy-wasm-cpp-host refuses bigger random_get requests.
const RANDOM_GET_MAX: u32 = 64 * 1024;

pub fn register(r: &mut Registry) {
    r.func(MODULE, "fd_write", fd_write);
    r.func(
        MODULE,
        "fd_read",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| ENOSYS,
    );
    // Envoy answers success without doing anything for these two.
    r.func(
        MODULE,
        "fd_seek",
        |_: Ctx<'_>, _: i32, _: i64, _: i32, _: i32| ESUCCESS,
    );
    r.func(MODULE, "fd_close", |_: Ctx<'_>, _: i32| ESUCCESS);
    r.func(MODULE, "fd_fdstat_get", fd_fdstat_get);
    // No preopened directories: EBADF ends wasi-libc's preopen scan.
    r.func(MODULE, "fd_prestat_get", |_: Ctx<'_>, _: i32, _: i32| EBADF);
    r.func(
        MODULE,
        "fd_prestat_dir_name",
        |_: Ctx<'_>, _: i32, _: i32, _: i32| ENOSYS,
    );
    r.func(MODULE, "environ_sizes_get", environ_sizes_get);
    r.func(MODULE, "environ_get", environ_get);
    r.func(MODULE, "args_sizes_get", args_sizes_get);
    r.func(MODULE, "args_get", |_: Ctx<'_>, _: i32, _: i32| ESUCCESS);
    r.func(MODULE, "clock_time_get", clock_time_get);
    r.func(MODULE, "random_get", random_get);
    r.func(MODULE, "proc_exit", proc_exit);
}

/// Envoy logs each write as one line (stdout at info, stderr at error), minus
/// one trailing newline.
fn fd_write(mut c: Ctx<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> i32 {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return EBADF,
    };
    let mut text = Vec::new();
    for i in 0..iovs_len as u32 {
        let at = (iovs as u32).wrapping_add(i.wrapping_mul(8)) as i32;
        let Some(iov) = read(&mut c, at, 8) else {
            return EFAULT;
        };
        let buf = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        if len > 0 {
            let Some(chunk) = read(&mut c, buf as i32, len as i32) else {
                return EFAULT;
            };
            text.extend_from_slice(&chunk);
        }
    }
    let written = text.len();
    if written > 0 {
        if text.last() == Some(&b'\n') {
            text.pop();
        }
        let line = String::from_utf8_lossy(&text).into_owned();
        c.data_mut().log(level, line);
    }
    if !write_u32(&mut c, nwritten, written as u32) {
        return EFAULT;
    }
    ESUCCESS
}

fn fd_fdstat_get(mut c: Ctx<'_>, fd: i32, stat: i32) -> i32 {
    if fd != 1 && fd != 2 {
        return EBADF;
    }
    // 24-byte fdstat: zeroed except fs_rights_base = FD_WRITE, as Envoy reports.
    let mut bytes = [0u8; 24];
    bytes[8..16].copy_from_slice(&64u64.to_le_bytes());
    if write(&mut c, stat, &bytes) {
        ESUCCESS
    } else {
        EFAULT
    }
}

fn environ_entries(c: &Ctx<'_>) -> Vec<Vec<u8>> {
    c.data()
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}\0").into_bytes())
        .collect()
}

fn environ_sizes_get(mut c: Ctx<'_>, count_ptr: i32, size_ptr: i32) -> i32 {
    let entries = environ_entries(&c);
    let size: usize = entries.iter().map(Vec::len).sum();
    if write_u32(&mut c, count_ptr, entries.len() as u32)
        && write_u32(&mut c, size_ptr, size as u32)
    {
        ESUCCESS
    } else {
        EFAULT
    }
}

fn environ_get(mut c: Ctx<'_>, array_ptr: i32, buf_ptr: i32) -> i32 {
    let mut slot = array_ptr as u32;
    let mut cursor = buf_ptr as u32;
    for entry in environ_entries(&c) {
        if !write_u32(&mut c, slot as i32, cursor) || !write(&mut c, cursor as i32, &entry) {
            return EFAULT;
        }
        slot = slot.wrapping_add(4);
        cursor = cursor.wrapping_add(entry.len() as u32);
    }
    ESUCCESS
}

fn args_sizes_get(mut c: Ctx<'_>, argc_ptr: i32, size_ptr: i32) -> i32 {
    if write_u32(&mut c, argc_ptr, 0) && write_u32(&mut c, size_ptr, 0) {
        ESUCCESS
    } else {
        EFAULT
    }
}

/// Realtime and monotonic clocks both follow the Host's test clock.
fn clock_time_get(mut c: Ctx<'_>, clock: i32, _precision: i64, out: i32) -> i32 {
    let now = c.data().host().now_nanos;
    let value = match clock {
        0 => now,
        // Monotonic: starts at 1s and advances with the test clock.
        1 => now.saturating_sub(START_NANOS) + 1_000_000_000,
        _ => return ENOTSUP,
    };
    if write_u64(&mut c, out, value) {
        ESUCCESS
    } else {
        EFAULT
    }
}

fn random_get(mut c: Ctx<'_>, buf: i32, len: i32) -> i32 {
    let len = len as u32;
    if len > RANDOM_GET_MAX {
        return EINVAL;
    }
    let mut bytes = Vec::with_capacity(len as usize + 8);
    {
        let mut host = c.data().host();
        while bytes.len() < len as usize {
            bytes.extend_from_slice(&host.next_random().to_le_bytes());
        }
    }
    bytes.truncate(len as usize);
    if write(&mut c, buf, &bytes) {
        ESUCCESS
    } else {
        EFAULT
    }
}

/// Envoy only logs proc_exit, but the guest's proc_exit never returns, so the
/// module traps right after; trapping here says why.
fn proc_exit(_: Ctx<'_>, code: i32) -> Result<()> {
    Err(wasmtime::format_err!("proc_exit({code}) called"))
}
