//! The queue's rules, one process playing several: each "process" is its
//! own mapping of the side file (its own participant record and lock).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;
use crate::budget::CpuBudget;
use crate::clock::{now_ns, now_unix_ms};
use crate::queue::file_queue::FileQueue;
use crate::queue::member::{Member, Turn};
use crate::queue::priority::{Priority, Settings};
use crate::shared::SideFile;
use crate::shared::layout::MAX_HANDOFF_NS;
use crate::shared::mapping::path_for;

struct Fixture {
    _dir: tempfile::TempDir,
    db: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.db");
        std::fs::write(&db, b"").unwrap();
        let db = db.to_str().unwrap().to_string();
        Fixture { _dir: dir, db }
    }

    /// A mapping as another process would have it.
    fn process(&self) -> Arc<SideFile> {
        Arc::new(SideFile::map(Path::new(&self.db), path_for(&self.db), true).unwrap())
    }

    fn member(&self, side: &Arc<SideFile>, handoff_ms: f64) -> Member {
        Member::new(
            FileQueue {
                side: Arc::clone(side),
            },
            Arc::new(Settings::new(Priority::Interactive, handoff_ms, 1_000.0)),
        )
    }
}

/// Puts `member` in the queue as a waiter would (without sleeping).
fn enqueue(member: &Member) -> usize {
    let index = member
        .queue
        .claim_slot(member.token, member.settings.priority())
        .unwrap();
    *member.slot.lock() = Some(index);
    index
}

fn budget() -> CpuBudget {
    CpuBudget::start()
}

#[test]
fn an_uncontended_lock_is_taken_at_once() {
    let f = Fixture::new();
    let side = f.process();
    let a = f.member(&side, 2.0);
    for _ in 0..3 {
        let start = Instant::now();
        a.before_attempt();
        assert!(start.elapsed() < YIELD_MAX, "no one to give way to");
        a.on_acquired();
        a.on_released();
    }
    assert_eq!(side.header().waiting.load(Ordering::Relaxed), 0);
}

#[test]
fn the_holder_keeps_its_tenure_then_must_yield() {
    let f = Fixture::new();
    let (p1, p2) = (f.process(), f.process());
    let holder = f.member(&p1, 5.0);
    let waiter = f.member(&p2, 5.0);
    holder.on_acquired();
    assert!(holder.owns_tenure(now_ns()));
    enqueue(&waiter);
    // A writer in a loop: comes straight back after each release.
    holder.regrab_ewma_ns.store(0, Ordering::Relaxed);
    holder.on_released();
    assert!(
        waiter.queue.tenure_running(waiter.token, now_ns()),
        "the tenure runs on"
    );
    holder.before_attempt(); // within its tenure: no yield
    holder.on_acquired();
    std::thread::sleep(Duration::from_millis(8)); // beyond its 2 ms tenure
    assert!(!holder.owns_tenure(now_ns()));
    assert!(!waiter.queue.tenure_running(waiter.token, now_ns()));
    holder.on_released();
    assert_eq!(
        p1.header().tenure_owner.load(Ordering::Relaxed),
        0,
        "an expired tenure is handed over at release"
    );
}

#[test]
fn a_holder_that_pauses_hands_over_at_release_and_wakes_the_head() {
    let f = Fixture::new();
    let (p1, p2) = (f.process(), f.process());
    let handler = f.member(&p1, 5.0);
    let waiter = f.member(&p2, 5.0);
    handler.on_acquired();
    let slot = enqueue(&waiter);
    let word = p2.slot(slot).wake.load(Ordering::Acquire);
    std::thread::sleep(Duration::from_micros(100)); // not a snapshot bounce
    handler.on_released(); // a request handler: its history says it pauses
    assert!(!waiter.queue.tenure_running(waiter.token, now_ns()));
    assert_ne!(
        p2.slot(slot).wake.load(Ordering::Acquire),
        word,
        "the release woke the head"
    );
}

#[test]
fn a_snapshot_bounce_keeps_the_tenure() {
    let f = Fixture::new();
    let (p1, p2) = (f.process(), f.process());
    let bounced = f.member(&p1, 5.0);
    let waiter = f.member(&p2, 5.0);
    enqueue(&waiter);
    bounced.on_acquired();
    bounced.on_released(); // within a few µs: SQLite gave it straight back
    assert!(bounced.owns_tenure(now_ns()));
}

#[test]
fn an_expired_tenure_release_wakes_the_sleeping_head_promptly() {
    let f = Fixture::new();
    let (p1, p2) = (f.process(), f.process());
    let holder = f.member(&p1, 0.0);
    let waiter = Arc::new(f.member(&p2, 0.0));
    holder.on_acquired();
    let w = Arc::clone(&waiter);
    let thread = std::thread::spawn(move || {
        let deadline = now_ns() + 10_000_000_000;
        let turn = w.wait_turn(deadline, u64::MAX, &mut budget());
        (turn, Instant::now())
    });
    let start = Instant::now();
    while !waiter.is_queued() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The holder is a live participant: the head sleeps until woken.
    std::thread::sleep(Duration::from_millis(50));
    let slot = waiter.slot.lock().unwrap();
    let word = p2.slot(slot).wake.load(Ordering::Acquire);
    let released = Instant::now();
    holder.on_released();
    assert_ne!(
        p2.slot(slot).wake.load(Ordering::Acquire),
        word,
        "the release of an expired tenure woke the head"
    );
    let (turn, at) = thread.join().unwrap();
    assert_eq!(turn, Turn::Retry);
    assert!(at.duration_since(released) < Duration::from_secs(1));
}

#[test]
fn serving_order_is_interactive_first_then_oldest_ticket() {
    let f = Fixture::new();
    let side = f.process();
    let make = |p: Priority| {
        let m = f.member(&side, 2.0);
        m.settings.set_priority(p);
        let i = enqueue(&m);
        (m, i)
    };
    let (_bg, _) = make(Priority::Background);
    let (_i1, first_interactive) = make(Priority::Interactive);
    let (_i2, _) = make(Priority::Interactive);
    let probe = f.member(&side, 2.0);
    assert_eq!(probe.queue.head(now_ns()), Some(first_interactive));
    let listed = waiters::waiters(&side);
    assert_eq!(listed.len(), 3);
    assert!(listed[0].is_head && listed[0].priority == Priority::Interactive);
    assert_eq!(listed[2].priority, Priority::Background);
}

#[test]
fn background_waiters_are_promoted_after_a_while() {
    let f = Fixture::new();
    let side = f.process();
    let bg = f.member(&side, 2.0);
    bg.settings.set_priority(Priority::Background);
    let b = enqueue(&bg);
    let it = f.member(&side, 2.0);
    let i = enqueue(&it);
    assert_eq!(it.queue.head(now_ns()), Some(i));
    side.slot(b).wait_start_unix_ms.store(
        now_unix_ms() - BACKGROUND_PROMOTE.as_millis() as u64 - 1,
        Ordering::Relaxed,
    );
    assert_eq!(
        it.queue.head(now_ns()),
        Some(b),
        "older ticket wins once promoted"
    );
}

#[test]
fn slots_of_dead_processes_and_garbage_are_freed_not_served() {
    let f = Fixture::new();
    let survivor_side = f.process();
    let survivor = f.member(&survivor_side, 2.0);
    let doomed_side = f.process();
    let doomed = f.member(&doomed_side, 2.0);
    let d = enqueue(&doomed);
    let s = enqueue(&survivor);
    assert_eq!(survivor.queue.head(now_ns()), Some(d), "older ticket");
    // Garbage a peer wrote: slots with made-up owners and ticket 0.
    for (index, owner) in [(200, 0xdead_beef_u64), (201, u64::MAX), (202, 999 << 40)] {
        let slot = survivor_side.slot(index);
        slot.owner.store(owner, Ordering::Release);
        slot.beat.store(7, Ordering::Release);
    }
    survivor_side
        .header()
        .waiting
        .fetch_add(3, Ordering::AcqRel);
    // Its process dies without leaving: the slot stays, the locks go.
    *doomed.slot.lock() = None;
    drop(doomed);
    drop(doomed_side);
    std::thread::sleep(Duration::from_millis(10)); // probe cache
    assert_eq!(survivor.queue.head(now_ns()), Some(s));
    for index in [d, 200, 201, 202] {
        assert_eq!(
            survivor_side.slot(index).owner.load(Ordering::Relaxed),
            0,
            "slot {index} freed"
        );
    }
    assert_eq!(survivor_side.header().waiting.load(Ordering::Relaxed), 1);
}

#[test]
fn a_forged_slot_of_a_live_process_is_skipped_once_it_does_not_move() {
    let f = Fixture::new();
    let side = f.process();
    let live = f.member(&side, 2.0);
    let l = enqueue(&live);
    // A peer forges a slot with a live process's token and the best ticket.
    let forged = side.slot(100);
    forged.owner.store(live.token ^ 0xffff, Ordering::Release);
    forged.ticket.store(0, Ordering::Release);
    forged.beat.store(1, Ordering::Release);
    side.header().waiting.fetch_add(1, Ordering::AcqRel);
    assert_eq!(
        live.queue.head(now_ns()),
        Some(100),
        "it looks live at first"
    );
    std::thread::sleep(Duration::from_nanos(STALE_NS + 10_000_000));
    side.slot(l).beat.fetch_add(1, Ordering::AcqRel);
    assert_eq!(
        live.queue.head(now_ns()),
        Some(l),
        "a bounded delay, no more"
    );
}

#[test]
fn a_waiter_that_stops_moving_is_skipped() {
    let f = Fixture::new();
    let side = f.process();
    let stopped = f.member(&side, 2.0);
    let st = enqueue(&stopped); // never beats again (a stopped process)
    let live = f.member(&side, 2.0);
    let l = enqueue(&live);
    assert_eq!(live.queue.head(now_ns()), Some(st));
    std::thread::sleep(Duration::from_nanos(STALE_NS + 10_000_000));
    live.queue.side.slot(l).beat.fetch_add(1, Ordering::AcqRel);
    assert_eq!(
        live.queue.head(now_ns()),
        Some(l),
        "the stopped head is skipped"
    );
}

#[test]
fn a_newcomer_gives_the_head_a_free_lock_but_is_never_refused() {
    let f = Fixture::new();
    let (p1, p2) = (f.process(), f.process());
    let head = Arc::new(f.member(&p1, 2.0));
    let newcomer = f.member(&p2, 2.0);
    enqueue(&head);
    // The head never takes the lock: the newcomer waits at most YIELD_MAX.
    let start = Instant::now();
    newcomer.before_attempt();
    let waited = start.elapsed();
    assert!(
        waited >= YIELD_MAX - Duration::from_micros(200),
        "{waited:?}"
    );
    assert!(waited < Duration::from_millis(500), "{waited:?}");
    // The head takes it: the newcomer goes on at once.
    let h = Arc::clone(&head);
    let taker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_micros(300));
        h.on_acquired();
    });
    let start = Instant::now();
    newcomer.before_attempt();
    taker.join().unwrap();
    assert!(start.elapsed() < YIELD_MAX + Duration::from_millis(50));
}

#[test]
fn no_tenure_outlasts_the_cap_whatever_the_file_says() {
    let f = Fixture::new();
    let (p1, p2) = (f.process(), f.process());
    let waiter = f.member(&p2, 2.0);
    let header = p1.header();
    header.tenure_owner.store(12345, Ordering::Release);
    header.tenure_ns.store(u64::MAX, Ordering::Release);
    header.holder.store(12345, Ordering::Release);
    header.tenure_seq.fetch_add(1, Ordering::AcqRel);
    assert!(waiter.queue.tenure_running(waiter.token, now_ns()));
    std::thread::sleep(Duration::from_nanos(MAX_HANDOFF_NS + 2_000_000));
    assert!(!waiter.queue.tenure_running(waiter.token, now_ns()));
}

#[test]
fn waiting_past_the_deadline_leaves_the_queue() {
    let f = Fixture::new();
    let (p1, p2) = (f.process(), f.process());
    let holder = f.member(&p1, 5.0);
    holder.on_acquired();
    let first = f.member(&p2, 2.0);
    enqueue(&first);
    let second = f.member(&p2, 2.0);
    let start = Instant::now();
    assert_eq!(
        second.wait_turn(now_ns() + 30_000_000, u64::MAX, &mut budget()),
        Turn::Deadline
    );
    assert!(start.elapsed() >= Duration::from_millis(25));
    assert!(!second.is_queued());
    assert_eq!(p1.header().waiting.load(Ordering::Relaxed), 1);
}

#[test]
fn the_tenure_shrinks_with_the_queue_to_keep_the_wait() {
    let settings = Settings::new(Priority::Interactive, 10.0, 50.0);
    assert_eq!(settings.tenure_ns(0, 0), 10_000_000, "alone: the longest");
    assert_eq!(settings.tenure_ns(4, 0), 10_000_000, "50 ms / 5 is 10 ms");
    assert_eq!(settings.tenure_ns(7, 0), 6_250_000, "8 writers: 50 ms / 8");
    assert_eq!(
        settings.tenure_ns(15, 0),
        3_125_000,
        "16 writers: 50 ms / 16"
    );
    assert_eq!(
        settings.tenure_ns(31, 0),
        2_000_000,
        "32 writers: not below 2 ms"
    );
    assert_eq!(
        settings.tenure_ns(7, 1_250_000),
        5_000_000,
        "what each turn adds is taken off"
    );
    assert_eq!(
        settings.tenure_ns(63, 1_000_000),
        2_000_000,
        "never below 2 ms"
    );
    let short = Settings::new(Priority::Interactive, 1.0, 50.0);
    assert_eq!(
        short.tenure_ns(63, 0),
        1_000_000,
        "unless handoff_ms is lower"
    );
    let capped = Settings::new(Priority::Interactive, 2.0, 50.0);
    assert_eq!(capped.tenure_ns(7, 0), 2_000_000, "never above handoff_ms");
    let huge = Settings::new(Priority::Interactive, 1e9, 1e9);
    assert_eq!(huge.tenure_ns(0, 0), MAX_HANDOFF_NS, "never above the cap");
}

#[test]
fn a_new_tenure_is_sized_by_the_queue_it_finds() {
    let f = Fixture::new();
    let (p1, p2, p3) = (f.process(), f.process(), f.process());
    let holder = Member::new(
        FileQueue {
            side: Arc::clone(&p1),
        },
        Arc::new(Settings::new(Priority::Interactive, 10.0, 9.9)),
    );
    let (w1, w2) = (f.member(&p2, 2.0), f.member(&p3, 2.0));
    enqueue(&w1);
    enqueue(&w2);
    holder.on_acquired();
    assert_eq!(
        p1.header().tenure_ns.load(Ordering::Relaxed),
        3_000_000,
        "9.9 ms for three turns, less the hand-off allowance"
    );
    assert_eq!(holder.tenure_len_ns.load(Ordering::Relaxed), 3_000_000);
}
