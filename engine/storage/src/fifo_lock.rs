//! A single-core async lock that hands out turns strictly in the order they were asked for.
//!
//! glommio's `Semaphore` wakes its first waiter when a permit is released, but the permit is
//! free until that waiter runs: a task that asks in between takes it first. For most uses
//! that is harmless. For appends it is not: an idempotent producer pipelines requests, and
//! their batches must reach the log in the order they arrived, or the later one's sequence
//! number is out of order and the producer fails.
//!
//! `FifoLock` hands the turn over on release instead: the next waiter owns it before it even
//! runs, and a newcomer queues behind everyone already waiting. It is `!Send` (one core's
//! tasks share it) and takes no system lock.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// The lock was closed: no turn will ever be given again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the lock is closed")]
pub struct Closed;

/// One task waiting for its turn.
#[derive(Default)]
struct Waiter {
    granted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

#[derive(Default)]
struct State {
    held: bool,
    closed: bool,
    waiting: VecDeque<Rc<Waiter>>,
}

/// See the module documentation.
#[derive(Default)]
pub struct FifoLock {
    state: RefCell<State>,
}

/// Holding one is having the turn; dropping it passes the turn to the next waiter.
#[must_use = "the turn passes on as soon as this is dropped"]
pub struct Turn<'a> {
    lock: &'a FifoLock,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.lock.pass_on();
    }
}

/// Removes a waiter that gave up (its future was dropped), passing on a turn it was given.
struct WaitingGuard<'a> {
    lock: &'a FifoLock,
    waiter: Rc<Waiter>,
    armed: bool,
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.waiter.granted.get() {
            self.lock.pass_on();
        } else {
            let mut state = self.lock.state.borrow_mut();
            state
                .waiting
                .retain(|other| !Rc::ptr_eq(other, &self.waiter));
        }
    }
}

impl FifoLock {
    pub fn new() -> FifoLock {
        FifoLock::default()
    }

    /// Waits for this caller's turn, behind everyone who asked before.
    pub async fn lock(&self) -> Result<Turn<'_>, Closed> {
        let waiter = {
            let mut state = self.state.borrow_mut();
            if state.closed {
                return Err(Closed);
            }
            if !state.held {
                debug_assert!(state.waiting.is_empty(), "a free lock has nobody waiting");
                state.held = true;
                return Ok(Turn { lock: self });
            }
            let waiter = Rc::new(Waiter::default());
            state.waiting.push_back(Rc::clone(&waiter));
            waiter
        };
        let mut guard = WaitingGuard {
            lock: self,
            waiter,
            armed: true,
        };
        poll_fn(|context| {
            if guard.waiter.granted.get() {
                return Poll::Ready(Ok(()));
            }
            if self.state.borrow().closed {
                return Poll::Ready(Err(Closed));
            }
            *guard.waiter.waker.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        })
        .await?;
        guard.armed = false;
        Ok(Turn { lock: self })
    }

    /// Refuses every later `lock` and wakes every waiter with [`Closed`]. A turn held now
    /// stays valid until dropped.
    pub fn close(&self) {
        let waiting = {
            let mut state = self.state.borrow_mut();
            state.closed = true;
            std::mem::take(&mut state.waiting)
        };
        for waiter in waiting {
            if let Some(waker) = waiter.waker.take() {
                waker.wake();
            }
        }
    }

    /// Gives the turn to the first waiter, or frees the lock if nobody waits.
    fn pass_on(&self) {
        let next = {
            let mut state = self.state.borrow_mut();
            let next = state.waiting.pop_front();
            state.held = next.is_some();
            next
        };
        if let Some(next) = next {
            next.granted.set(true);
            if let Some(waker) = next.waker.take() {
                waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutor;

    #[test]
    fn a_newcomer_waits_behind_a_woken_waiter() {
        LocalExecutor::default().run(async {
            let lock = Rc::new(FifoLock::new());
            let order = Rc::new(RefCell::new(Vec::new()));
            let first = lock.lock().await.expect("open");
            let waiting = {
                let (lock, order) = (Rc::clone(&lock), Rc::clone(&order));
                glommio::spawn_local(async move {
                    let _turn = lock.lock().await.expect("open");
                    order.borrow_mut().push("waiting");
                })
            };
            glommio::executor().yield_task_queue_now().await;
            // Release and ask again before the woken waiter has run: glommio's Semaphore
            // would give this newcomer the turn first.
            drop(first);
            let newcomer = {
                let (lock, order) = (Rc::clone(&lock), Rc::clone(&order));
                glommio::spawn_local(async move {
                    let _turn = lock.lock().await.expect("open");
                    order.borrow_mut().push("newcomer");
                })
            };
            newcomer.await;
            waiting.await;
            assert_eq!(*order.borrow(), ["waiting", "newcomer"]);
        });
    }

    #[test]
    fn turns_follow_the_order_of_asking() {
        LocalExecutor::default().run(async {
            let lock = Rc::new(FifoLock::new());
            let order = Rc::new(RefCell::new(Vec::new()));
            let tasks: Vec<_> = (0..20)
                .map(|number| {
                    let (lock, order) = (Rc::clone(&lock), Rc::clone(&order));
                    glommio::spawn_local(async move {
                        let _turn = lock.lock().await.expect("open");
                        // Hold the turn across a real suspension.
                        glommio::timer::sleep(std::time::Duration::from_micros(50)).await;
                        order.borrow_mut().push(number);
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
            assert_eq!(*order.borrow(), (0..20).collect::<Vec<_>>());
        });
    }

    #[test]
    fn a_waiter_that_gives_up_passes_its_turn_on() {
        LocalExecutor::default().run(async {
            let lock = FifoLock::new();
            let held = lock.lock().await.expect("open");
            {
                let mut abandoned = std::pin::pin!(lock.lock());
                let pending = futures_lite::future::poll_once(abandoned.as_mut()).await;
                assert!(pending.is_none());
                drop(held);
                // `abandoned` now owns the turn without having run; dropping it frees it.
            }
            let again = futures_lite::future::poll_once(lock.lock()).await;
            assert!(matches!(again, Some(Ok(_))), "the turn came back");
        });
    }

    #[test]
    fn closing_wakes_waiters_with_an_error_and_refuses_newcomers() {
        LocalExecutor::default().run(async {
            let lock = Rc::new(FifoLock::new());
            let held = lock.lock().await.expect("open");
            let waiting = {
                let lock = Rc::clone(&lock);
                glommio::spawn_local(async move { lock.lock().await.map(|_| ()) })
            };
            glommio::executor().yield_task_queue_now().await;
            lock.close();
            assert_eq!(waiting.await, Err(Closed));
            drop(held);
            assert!(lock.lock().await.is_err());
        });
    }
}
