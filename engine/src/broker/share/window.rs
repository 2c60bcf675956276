//! One share partition's in-flight records: which are available, acquired (by whom, until
//! when), acknowledged or archived, and how often each was delivered.
//!
//! The window spans the share-partition start offset (SPSO, [`Window::start`]) to the end
//! offset (SPEO, [`Window::end`]): every offset in between has an entry, and every offset
//! at or after the end is available and was never delivered. The window never holds more
//! than the lock limit of offsets, so memory per share partition is bounded.
//!
//! Kafka's rules:
//! - acquiring a record raises its delivery count;
//! - a record released (by its member, by an expired lock, or because its member left)
//!   whose delivery count reached the limit is archived instead of offered again;
//! - only the member holding a record may acknowledge it, and only while its lock holds;
//! - the start moves past every acknowledged or archived record at its head.
//!
//! Pure and clock-free: callers pass `now`. The unit tests drive it directly.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

use super::acknowledge_type;
use super::error::{AckBatchError, ShareError};
use super::record::{DurableState, Run, Snapshot, WINDOW_OFFSETS_MAX};

/// A record's state in the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordState {
    Available,
    Acquired { member: Rc<str>, until: Instant },
    Acknowledged,
    Archived,
}

#[derive(Clone, Debug)]
struct InFlight {
    state: RecordState,
    delivery_count: u16,
}

/// Offsets `first..=last` acknowledged with `types`: one type for all, or one per offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckBatch {
    pub first: i64,
    pub last: i64,
    pub types: Vec<i8>,
}

impl AckBatch {
    fn type_of(&self, offset: i64) -> i8 {
        match self.types.as_slice() {
            [single] => *single,
            types => types[(offset - self.first) as usize],
        }
    }
}

/// Checks the shape of a partition's acknowledgement batches before anything trusts them:
/// ascending, not overlapping, each type known, one type or one per offset, and no more
/// offsets in all than a window can hold (`max_offsets`).
pub fn check_batches(batches: &[AckBatch], max_offsets: u32) -> Result<(), AckBatchError> {
    let offsets_max = max_offsets;
    let max_offsets = i64::from(max_offsets);
    let mut total = 0i64;
    let mut previous_last = -1i64;
    for batch in batches {
        let (first, last) = (batch.first, batch.last);
        if first < 0 || last < first || first <= previous_last {
            return Err(AckBatchError::OutOfOrder { first, last });
        }
        let span = last - first + 1;
        total += span;
        if total > max_offsets {
            return Err(AckBatchError::TooManyOffsets { offsets_max });
        }
        if batch.types.len() != 1 && batch.types.len() as i64 != span {
            let types = batch.types.len();
            return Err(AckBatchError::TypeCount { first, last, types });
        }
        let known = |kind: &i8| (acknowledge_type::GAP..=acknowledge_type::REJECT).contains(kind);
        if let Some(&kind) = batch.types.iter().find(|kind| !known(kind)) {
            return Err(AckBatchError::UnknownType { kind });
        }
        previous_last = last;
    }
    Ok(())
}

/// One share partition's in-flight records.
#[derive(Debug)]
pub struct Window {
    start: i64,
    end: i64,
    records: BTreeMap<i64, InFlight>,
    /// The sequence of the last snapshot taken (persisted or being persisted).
    sequence: u64,
}

impl Window {
    /// A share partition that starts reading at `start`.
    pub fn new(start: i64) -> Window {
        Window {
            start,
            end: start,
            records: BTreeMap::new(),
            sequence: 0,
        }
    }

    /// The window a snapshot describes (its runs were checked when it was decoded).
    pub fn from_snapshot(snapshot: &Snapshot) -> Window {
        let mut window = Window::new(snapshot.start);
        window.sequence = snapshot.sequence;
        for run in &snapshot.runs {
            let state = match run.state {
                DurableState::Available => RecordState::Available,
                DurableState::Acknowledged => RecordState::Acknowledged,
                DurableState::Archived => RecordState::Archived,
            };
            for offset in window.end..=run.last {
                let covered = offset >= run.first;
                window.records.insert(
                    offset,
                    InFlight {
                        state: if covered {
                            state.clone()
                        } else {
                            RecordState::Available
                        },
                        delivery_count: if covered { run.delivery_count } else { 0 },
                    },
                );
            }
            window.end = window.end.max(run.last + 1);
        }
        window.advance_start();
        window
    }

    /// The share-partition start offset (SPSO).
    pub fn start(&self) -> i64 {
        self.start
    }

    /// The share-partition end offset (SPEO): the first offset never acquired.
    pub fn end(&self) -> i64 {
        self.end
    }

    /// The sequence of the last snapshot taken.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether the window may grow past its end (fewer than `max_locks` offsets in it).
    pub fn has_room(&self, max_locks: u32) -> bool {
        self.end - self.start < i64::from(max_locks)
    }

    /// The first offset at or after `cursor` that may be acquired now: an available record
    /// in the window, or the end when the log goes further and the window has room.
    pub fn next_acquirable(&self, cursor: i64, high_watermark: i64, max_locks: u32) -> Option<i64> {
        let in_window = self
            .records
            .range(cursor.max(self.start)..)
            .find(|(_, record)| record.state == RecordState::Available)
            .map(|(offset, _)| *offset);
        in_window.or_else(|| {
            (cursor <= self.end && self.end < high_watermark && self.has_room(max_locks))
                .then_some(self.end)
        })
    }

    /// Acquires `offset` for `member` if it is available (or the next new one); its
    /// delivery count, or `None` when it cannot be acquired.
    pub fn try_acquire(
        &mut self,
        offset: i64,
        member: &Rc<str>,
        until: Instant,
        max_locks: u32,
    ) -> Option<u16> {
        if offset < self.start {
            return None;
        }
        let acquired = RecordState::Acquired {
            member: Rc::clone(member),
            until,
        };
        if let Some(record) = self.records.get_mut(&offset) {
            if record.state != RecordState::Available {
                return None;
            }
            record.state = acquired;
            record.delivery_count = record.delivery_count.saturating_add(1);
            return Some(record.delivery_count);
        }
        if offset != self.end || !self.has_room(max_locks) {
            return None;
        }
        self.records.insert(
            offset,
            InFlight {
                state: acquired,
                delivery_count: 1,
            },
        );
        self.end += 1;
        Some(1)
    }

    /// Archives `offset` if it is the next new one: a control record, never delivered.
    pub fn skip_new(&mut self, offset: i64, max_locks: u32) -> bool {
        if offset != self.end || !self.has_room(max_locks) {
            return false;
        }
        self.records.insert(
            offset,
            InFlight {
                state: RecordState::Archived,
                delivery_count: 0,
            },
        );
        self.end += 1;
        true
    }

    /// Applies a member's acknowledgements, all or nothing: refused unless `member` holds
    /// every offset, with its lock still valid at `now`.
    pub fn acknowledge(
        &mut self,
        member: &str,
        batches: &[AckBatch],
        delivery_count_limit: u16,
        now: Instant,
    ) -> Result<(), ShareError> {
        let held = |offset: i64| {
            self.records.get(&offset).is_some_and(|record| {
                matches!(&record.state, RecordState::Acquired { member: holder, until }
                    if &**holder == member && *until > now)
            })
        };
        for batch in batches {
            if !(batch.first..=batch.last).all(held) {
                return Err(ShareError::RecordsNotHeld {
                    member_id: member.to_string(),
                    first: batch.first,
                    last: batch.last,
                });
            }
        }
        for batch in batches {
            for offset in batch.first..=batch.last {
                let kind = batch.type_of(offset);
                if let Some(record) = self.records.get_mut(&offset) {
                    record.state = match kind {
                        acknowledge_type::ACCEPT => RecordState::Acknowledged,
                        acknowledge_type::RELEASE => released(record, delivery_count_limit),
                        // REJECT, and GAP (an offset with no record).
                        _ => RecordState::Archived,
                    };
                }
            }
        }
        self.advance_start();
        Ok(())
    }

    /// Releases every record `member` holds; whether any was.
    pub fn release_member(&mut self, member: &str, delivery_count_limit: u16) -> bool {
        self.release_where(delivery_count_limit, |holder, _| holder == member)
    }

    /// Releases every record whose lock ran out by `now`; whether any did.
    pub fn expire(&mut self, now: Instant, delivery_count_limit: u16) -> bool {
        self.release_where(delivery_count_limit, |_, until| until <= now)
    }

    fn release_where(
        &mut self,
        delivery_count_limit: u16,
        matches: impl Fn(&str, Instant) -> bool,
    ) -> bool {
        let mut changed = false;
        for record in self.records.values_mut() {
            if let RecordState::Acquired { member, until } = &record.state {
                if matches(member, *until) {
                    record.state = released(record, delivery_count_limit);
                    changed = true;
                }
            }
        }
        if changed {
            self.advance_start();
        }
        changed
    }

    /// Whether any record is acquired (the tick then checks its lock).
    pub fn has_acquired(&self) -> bool {
        self.records
            .values()
            .any(|record| matches!(record.state, RecordState::Acquired { .. }))
    }

    /// Moves the start past records the log no longer has (retention deleted them).
    pub fn skip_below(&mut self, log_start: i64) {
        if self.start >= log_start {
            return;
        }
        self.records = self.records.split_off(&log_start);
        self.start = log_start;
        self.end = self.end.max(log_start);
        self.advance_start();
    }

    /// Moves the start past the acknowledged and archived records at the head.
    fn advance_start(&mut self) {
        while let Some(entry) = self.records.first_entry() {
            match entry.get().state {
                RecordState::Acknowledged | RecordState::Archived => {
                    entry.remove();
                    self.start += 1;
                }
                _ => break,
            }
        }
        if self.records.is_empty() {
            self.start = self.end;
        }
    }

    /// The durable state, under a new sequence. Acquired records are written as available
    /// with the delivery count their acquisition gave them.
    pub fn snapshot(&mut self) -> Snapshot {
        self.sequence += 1;
        let mut runs: Vec<Run> = Vec::new();
        for (&offset, record) in &self.records {
            let state = match record.state {
                RecordState::Acknowledged => DurableState::Acknowledged,
                RecordState::Archived => DurableState::Archived,
                RecordState::Available | RecordState::Acquired { .. } => DurableState::Available,
            };
            if state == DurableState::Available && record.delivery_count == 0 {
                continue;
            }
            match runs.last_mut() {
                Some(run)
                    if run.last + 1 == offset
                        && run.state == state
                        && run.delivery_count == record.delivery_count =>
                {
                    run.last = offset;
                }
                _ => runs.push(Run {
                    first: offset,
                    last: offset,
                    state,
                    delivery_count: record.delivery_count,
                }),
            }
        }
        debug_assert!(self.end - self.start <= WINDOW_OFFSETS_MAX);
        Snapshot {
            sequence: self.sequence,
            start: self.start,
            runs,
        }
    }

    /// The state and delivery count of `offset`, for tests and logs.
    pub fn state_of(&self, offset: i64) -> Option<(RecordState, u16)> {
        self.records
            .get(&offset)
            .map(|record| (record.state.clone(), record.delivery_count))
    }
}

/// What a released record becomes: available again, or archived at the delivery limit.
fn released(record: &InFlight, delivery_count_limit: u16) -> RecordState {
    if record.delivery_count >= delivery_count_limit {
        RecordState::Archived
    } else {
        RecordState::Available
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LOCKS: u32 = 100;
    const LIMIT: u16 = 3;

    fn member(name: &str) -> Rc<str> {
        Rc::from(name)
    }

    fn ack(first: i64, last: i64, kind: i8) -> AckBatch {
        AckBatch {
            first,
            last,
            types: vec![kind],
        }
    }

    /// Acquires every acquirable offset below `high_watermark` for `who`, up to `max`.
    fn acquire_all(
        window: &mut Window,
        who: &Rc<str>,
        until: Instant,
        hw: i64,
        max: usize,
    ) -> Vec<(i64, u16)> {
        let mut got = Vec::new();
        let mut cursor = 0;
        while got.len() < max {
            let Some(offset) = window.next_acquirable(cursor, hw, LOCKS) else {
                break;
            };
            if let Some(count) = window.try_acquire(offset, who, until, LOCKS) {
                got.push((offset, count));
            }
            cursor = offset + 1;
        }
        got
    }

    #[test]
    fn two_members_split_records_and_accepts_move_the_start() {
        let now = Instant::now();
        let until = now + Duration::from_secs(30);
        let (a, b) = (member("a"), member("b"));
        let mut window = Window::new(0);
        let first = acquire_all(&mut window, &a, until, 10, 4);
        assert_eq!(first, vec![(0, 1), (1, 1), (2, 1), (3, 1)]);
        let second = acquire_all(&mut window, &b, until, 10, 100);
        assert_eq!(second.first(), Some(&(4, 1)));
        assert_eq!(second.len(), 6);
        assert!(acquire_all(&mut window, &a, until, 10, 100).is_empty());
        // b cannot acknowledge a's records; nothing is applied.
        assert!(matches!(
            window.acknowledge("b", &[ack(3, 4, acknowledge_type::ACCEPT)], LIMIT, now),
            Err(ShareError::RecordsNotHeld {
                first: 3,
                last: 4,
                ..
            })
        ));
        assert_eq!(window.state_of(4).map(|(_, count)| count), Some(1));
        window
            .acknowledge("b", &[ack(4, 9, acknowledge_type::ACCEPT)], LIMIT, now)
            .expect("b holds 4..=9");
        assert_eq!(window.start(), 0, "a still holds 0..=3");
        window
            .acknowledge("a", &[ack(0, 3, acknowledge_type::ACCEPT)], LIMIT, now)
            .expect("a holds 0..=3");
        assert_eq!((window.start(), window.end()), (10, 10));
    }

    #[test]
    fn released_and_expired_records_come_back_until_the_limit_archives_them() {
        let now = Instant::now();
        let (a, b) = (member("a"), member("b"));
        let mut window = Window::new(5);
        let short = now + Duration::from_millis(10);
        assert_eq!(acquire_all(&mut window, &a, short, 6, 10), vec![(5, 1)]);
        assert!(window.expire(now + Duration::from_millis(20), LIMIT));
        // An expired lock: the holder's acknowledgement is refused, another member gets it.
        assert!(matches!(
            window.acknowledge("a", &[ack(5, 5, acknowledge_type::ACCEPT)], LIMIT, now),
            Err(ShareError::RecordsNotHeld { .. })
        ));
        let later = now + Duration::from_secs(30);
        assert_eq!(acquire_all(&mut window, &b, later, 6, 10), vec![(5, 2)]);
        window
            .acknowledge("b", &[ack(5, 5, acknowledge_type::RELEASE)], LIMIT, now)
            .expect("release");
        assert_eq!(acquire_all(&mut window, &a, later, 6, 10), vec![(5, 3)]);
        window
            .acknowledge("a", &[ack(5, 5, acknowledge_type::RELEASE)], LIMIT, now)
            .expect("release at the limit");
        assert!(
            acquire_all(&mut window, &a, later, 6, 10).is_empty(),
            "archived"
        );
        assert_eq!(window.start(), 6);
    }

    #[test]
    fn rejected_records_are_archived_and_members_leaving_release_theirs() {
        let now = Instant::now();
        let until = now + Duration::from_secs(30);
        let a = member("a");
        let mut window = Window::new(0);
        acquire_all(&mut window, &a, until, 3, 10);
        window
            .acknowledge(
                "a",
                &[AckBatch {
                    first: 0,
                    last: 1,
                    types: vec![acknowledge_type::REJECT, acknowledge_type::ACCEPT],
                }],
                LIMIT,
                now,
            )
            .expect("per-offset types");
        assert_eq!(window.start(), 2);
        assert!(window.release_member("a", LIMIT));
        assert_eq!(acquire_all(&mut window, &a, until, 3, 10), vec![(2, 2)]);
    }

    #[test]
    fn the_window_never_holds_more_than_the_lock_limit() {
        let now = Instant::now();
        let a = member("a");
        let mut window = Window::new(0);
        let got = acquire_all(&mut window, &a, now + Duration::from_secs(1), 1_000, 1_000);
        assert_eq!(got.len(), LOCKS as usize);
        assert_eq!(window.next_acquirable(0, 1_000, LOCKS), None);
    }

    #[test]
    fn snapshots_keep_what_must_survive_and_restore_it() {
        let now = Instant::now();
        let until = now + Duration::from_secs(30);
        let a = member("a");
        let mut window = Window::new(0);
        acquire_all(&mut window, &a, until, 6, 10);
        let batches = [
            ack(1, 2, acknowledge_type::ACCEPT),
            ack(3, 3, acknowledge_type::RELEASE),
            ack(4, 4, acknowledge_type::REJECT),
        ];
        window.acknowledge("a", &batches, LIMIT, now).expect("ack");
        let snapshot = window.snapshot();
        assert_eq!(snapshot.start, 0, "offset 0 is still held");
        let restored = Window::from_snapshot(&snapshot);
        assert_eq!((restored.start(), restored.end()), (0, 6));
        assert_eq!(restored.state_of(0), Some((RecordState::Available, 1)));
        assert_eq!(restored.state_of(1), Some((RecordState::Acknowledged, 1)));
        assert_eq!(restored.state_of(3), Some((RecordState::Available, 1)));
        assert_eq!(restored.state_of(4), Some((RecordState::Archived, 1)));
        assert_eq!(
            restored.state_of(5),
            Some((RecordState::Available, 1)),
            "held records are written as available, with the delivery they got"
        );
        let second = window.snapshot();
        assert!(second.sequence > snapshot.sequence);
    }

    #[test]
    fn acknowledgement_shapes_are_checked() {
        let ok = [ack(0, 3, 1), ack(5, 5, 2)];
        check_batches(&ok, 10).expect("well formed");
        let bad: [(&[AckBatch], AckBatchError); 6] = [
            (
                &[ack(3, 2, 1)],
                AckBatchError::OutOfOrder { first: 3, last: 2 },
            ),
            (
                &[ack(0, 3, 1), ack(3, 4, 1)],
                AckBatchError::OutOfOrder { first: 3, last: 4 },
            ),
            (&[ack(0, 3, 4)], AckBatchError::UnknownType { kind: 4 }),
            (
                &[ack(0, 10, 1)],
                AckBatchError::TooManyOffsets { offsets_max: 10 },
            ),
            (
                &[AckBatch {
                    first: 0,
                    last: 2,
                    types: vec![1, 1],
                }],
                AckBatchError::TypeCount {
                    first: 0,
                    last: 2,
                    types: 2,
                },
            ),
            (
                &[ack(-1, 0, 1)],
                AckBatchError::OutOfOrder { first: -1, last: 0 },
            ),
        ];
        for (batches, expected) in bad {
            let refused = check_batches(batches, 10).expect_err("malformed");
            assert_eq!(refused, expected, "{batches:?}");
        }
    }
}
