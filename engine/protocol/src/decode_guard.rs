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

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that check a block is unmapped run one at a time, so no other test's
    /// mapping lands on the freed address in between.
    static MAPPINGS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Whether the page holding `pointer` is mapped (`mincore` fails with ENOMEM otherwise).
    fn mapped(pointer: *const u8) -> bool {
        let page = (pointer as usize) & !(PAGE_BYTES - 1);
        let mut resident = 0u8;
        // SAFETY: mincore only inspects the mapping; `resident` has room for one page's flag.
        unsafe { libc::mincore(page as *mut libc::c_void, PAGE_BYTES, &mut resident) == 0 }
    }

    #[test]
    fn only_large_page_aligned_layouts_are_reserved() {
        let layout = |size, align| Layout::from_size_align(size, align).unwrap();
        assert!(reserved(&layout(RESERVE_FROM_BYTES, 8)));
        assert!(reserved(&layout(RESERVE_FROM_BYTES, PAGE_BYTES)));
        assert!(!reserved(&layout(RESERVE_FROM_BYTES - 1, 8)));
        assert!(!reserved(&layout(RESERVE_FROM_BYTES, 2 * PAGE_BYTES)));
        assert!(!reserved(&layout(0, 1)));
    }

    #[test]
    fn a_reservation_is_a_mapping_that_dealloc_unmaps() {
        let _serial = MAPPINGS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let layout = Layout::from_size_align(RESERVE_FROM_BYTES, 8).unwrap();
        // SAFETY: the layout has a non-zero size; the pointer is freed with the same layout.
        unsafe {
            let pointer = ReservingAllocator.alloc(layout);
            assert!(!pointer.is_null());
            assert_eq!(pointer as usize % PAGE_BYTES, 0);
            pointer.write(1);
            pointer.add(layout.size() - 1).write(2);
            assert!(mapped(pointer));
            ReservingAllocator.dealloc(pointer, layout);
            assert!(!mapped(pointer), "dealloc must unmap the reservation");
        }
    }

    #[test]
    fn realloc_across_the_threshold_keeps_the_bytes_and_frees_the_old_block() {
        let _serial = MAPPINGS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let small = Layout::from_size_align(4096, 8).unwrap();
        let pattern: Vec<u8> = (0..small.size()).map(|index| (index % 251) as u8).collect();
        // SAFETY: every pointer is used within its layout and freed once, with its layout.
        unsafe {
            let heap = ReservingAllocator.alloc(small);
            assert!(!heap.is_null());
            heap.copy_from_nonoverlapping(pattern.as_ptr(), pattern.len());

            // Up: from the system allocator to a reservation.
            let big = ReservingAllocator.realloc(heap, small, RESERVE_FROM_BYTES);
            assert!(!big.is_null());
            assert_eq!(big as usize % PAGE_BYTES, 0);
            assert_eq!(std::slice::from_raw_parts(big, pattern.len()), &pattern[..]);
            big.add(RESERVE_FROM_BYTES - 1).write(7);

            // Down: from the reservation back to the system allocator.
            let big_layout = Layout::from_size_align(RESERVE_FROM_BYTES, 8).unwrap();
            let back = ReservingAllocator.realloc(big, big_layout, 64);
            assert!(!back.is_null());
            assert_eq!(std::slice::from_raw_parts(back, 64), &pattern[..64]);
            assert!(
                !mapped(big),
                "the reservation must be unmapped once moved out of"
            );

            // Within the reserved class: a new mapping, the old one unmapped.
            let first = ReservingAllocator.alloc(big_layout);
            first.write(9);
            let grown = ReservingAllocator.realloc(first, big_layout, 2 * RESERVE_FROM_BYTES);
            assert!(!grown.is_null());
            assert_eq!(grown.read(), 9);
            assert!(!mapped(first), "the old reservation must be unmapped");
            let grown_layout = Layout::from_size_align(2 * RESERVE_FROM_BYTES, 8).unwrap();
            ReservingAllocator.dealloc(grown, grown_layout);

            ReservingAllocator.dealloc(back, Layout::from_size_align(64, 8).unwrap());
        }
    }
}
