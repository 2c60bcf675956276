//! A global allocator that keeps hostile array lengths from aborting the broker.
//!
//! `kafka-protocol` 0.18 decodes every array with `Vec::with_capacity(n)`, where `n` comes
//! straight from the wire (up to 2^31 - 1, or 2^32 - 1 for compact arrays). A request that
//! claims two billion topics makes it ask for hundreds of gigabytes. The system allocator
//! refuses, and Rust aborts the process. Every other core, and every other client, would go
//! down with it.
//!
//! This allocator serves allocations of `RESERVE_FROM_BYTES` or more with
//! `mmap(MAP_NORESERVE)`. That reserves address space only; pages are committed when they are
//! written. The hostile vector's capacity therefore costs nothing. The decoder then fails on the
//! first missing element (the frame is at most `max_request_bytes` long), the vector is
//! unmapped, and the connection is closed. Smaller allocations go to the system allocator
//! unchanged.
//!
//! It needs the kernel's default overcommit policy (`vm.overcommit_memory` 0 or 1). Under
//! policy 2 (strict accounting), such a reservation fails, and the process aborts as it would
//! without the guard. Install it in a binary with
//! `#[global_allocator] static ALLOCATOR: ReservingAllocator = ReservingAllocator;`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations this large are reserved, not committed.
pub const RESERVE_FROM_BYTES: usize = 1 << 30;

/// Page size bound for the alignment `mmap` guarantees.
const PAGE_BYTES: usize = 4096;

pub struct ReservingAllocator;

fn reserved(layout: &Layout) -> bool {
    layout.size() >= RESERVE_FROM_BYTES && layout.align() <= PAGE_BYTES
}

// SAFETY: every pointer handed out is either the system allocator's (and returned to it) or a
// fresh anonymous mapping of at least `layout.size()` bytes, page-aligned, which is unmapped
// with the same size; `reserved` depends only on the layout, which callers pass back unchanged.
unsafe impl GlobalAlloc for ReservingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if reserved(&layout) {
            let pointer = libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if pointer == libc::MAP_FAILED {
                std::ptr::null_mut()
            } else {
                pointer.cast()
            }
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if reserved(&layout) {
            self.alloc(layout) // anonymous mappings are zeroed
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if reserved(&layout) {
            libc::munmap(pointer.cast(), layout.size());
        } else {
            System.dealloc(pointer, layout)
        }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !reserved(&layout) && !reserved(&new_layout) {
            return System.realloc(pointer, layout, new_size);
        }
        let moved = self.alloc(new_layout);
        if !moved.is_null() {
            std::ptr::copy_nonoverlapping(pointer, moved, layout.size().min(new_size));
            self.dealloc(pointer, layout);
        }
        moved
    }
}
