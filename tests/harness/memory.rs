//! Guest memory access for host functions. Pointers arrive as wasm32 `i32` and
//! are reinterpreted as unsigned offsets; any out-of-bounds access becomes
//! Status::InvalidMemoryAccess, as in Envoy, rather than a host panic.

use wasmtime::{Caller, Extern, Memory};

use super::state::{Status, VmState};

pub type Ctx<'a> = Caller<'a, VmState>;

fn memory(c: &mut Ctx<'_>) -> Option<Memory> {
    c.get_export("memory").and_then(Extern::into_memory)
}

pub fn read(c: &mut Ctx<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let mem = memory(c)?;
    let end = ptr.checked_add(len)?;
    mem.data(&*c).get(ptr..end).map(<[u8]>::to_vec)
}

pub fn write(c: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> bool {
    match memory(c) {
        Some(mem) => mem.write(&mut *c, ptr as u32 as usize, bytes).is_ok(),
        None => false,
    }
}

pub fn write_u32(c: &mut Ctx<'_>, ptr: i32, value: u32) -> bool {
    write(c, ptr, &value.to_le_bytes())
}

pub fn write_u64(c: &mut Ctx<'_>, ptr: i32, value: u64) -> bool {
    write(c, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the guest the way Envoy's copyToPointerSize does: memory from
/// the guest's own allocator (the SDK frees it as a Vec), address and length
/// stored at the two out-pointers. Empty data is handed back as (0, 0) without
/// allocating, which the SDK reads as "no value" for properties and buffers.
pub fn give(
    c: &mut Ctx<'_>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> wasmtime::Result<Status> {
    let mut addr = 0i32;
    if !bytes.is_empty() {
        let alloc = c
            .get_export("proxy_on_memory_allocate")
            .or_else(|| c.get_export("malloc"))
            .and_then(Extern::into_func)
            .ok_or_else(|| wasmtime::format_err!("module exports no proxy_on_memory_allocate"))?;
        c.data_mut().guest_allocations += 1;
        // A trap inside the guest allocator propagates and crashes the VM.
        addr = alloc
            .typed::<i32, i32>(&*c)?
            .call(&mut *c, bytes.len() as i32)?;
        if addr == 0 || !write(c, addr, bytes) {
            return Ok(Status::InvalidMemoryAccess);
        }
    }
    if write_u32(c, ptr_ptr, addr as u32) && write_u32(c, size_ptr, bytes.len() as u32) {
        Ok(Status::Ok)
    } else {
        Ok(Status::InvalidMemoryAccess)
    }
}
