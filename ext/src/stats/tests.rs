//! The counters of a file (`registry.rs`) fed by its connections' wait
//! trackers (`tracker.rs`), tested together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::registry::*;
use crate::stats::tracker::{SlowStage, SlowWaitSeen, WaitTracker};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn identity_of(s: &ProcessSnapshot) -> (u64, u64, u64, u64) {
    let c = &s.counts;
    (
        c.acquired + c.gave_up + c.in_flight,
        c.in_flight,
        c.acquired,
        c.gave_up,
    )
}

/// The policy's clock runs over SQLite's run of busy calls (count 0
/// onwards), not over one wait: a step that takes the write lock and
/// is then refused something else keeps its deadline.
#[test]
fn a_run_of_busy_calls_outlasts_the_waits_inside_it() {
    let registry = Registry::default();
    let file = registry.file("/tmp/run.db");
    let tracker = WaitTracker::new(Arc::clone(&file));
    let t0 = Instant::now();
    tracker.handler_called(0, t0, None);
    tracker.chose_retry(t0 + ms(4), 4.0);
    tracker.settle(None); // the write lock was taken...
    let (ctx, _) = tracker.handler_called(1, t0 + ms(5), None); // ...and the step is refused again
    assert_eq!(
        (ctx.attempt, ctx.elapsed, ctx.previous_delay_ms, ctx.first),
        (1, ms(5), 4.0, false)
    );
    assert_eq!(identity_of(&file.snapshot()), (2, 1, 1, 0), "two waits");
    tracker.gave_up(t0 + ms(6), None);
    // A give-up ends the run; count 0 (a new step) starts one too.
    let (ctx, _) = tracker.handler_called(1, t0 + ms(7), None);
    assert_eq!((ctx.attempt, ctx.elapsed, ctx.first), (0, ms(0), true));
    tracker.chose_retry(t0 + ms(8), 1.0);
    let (ctx, _) = tracker.handler_called(0, t0 + ms(9), None);
    assert_eq!((ctx.attempt, ctx.elapsed, ctx.first), (0, ms(0), true));
}

/// The tracker reports nothing itself: it hands back the slow waits under
/// the threshold it is given, each wait's passing once and its end.
#[test]
fn slow_waits_are_handed_back_not_reported() {
    let registry = Registry::default();
    let file = registry.file("/tmp/slow.db");
    let tracker = WaitTracker::new(Arc::clone(&file));
    let slow_after = Some(ms(100));
    let seen = |stage, waited| Some(SlowWaitSeen { stage, waited });
    let t0 = Instant::now();

    // A fast wait: nothing.
    assert_eq!(tracker.handler_called(0, t0, slow_after).1, [None, None]);
    tracker.chose_retry(t0 + ms(10), 10.0);
    assert_eq!(tracker.settle(slow_after), None);

    // A slow one: passing the threshold once, then its end.
    let t1 = t0 + ms(20);
    assert_eq!(tracker.handler_called(0, t1, slow_after).1, [None, None]);
    assert!(
        tracker
            .slow_report_due(slow_after)
            .is_some_and(|due| due <= ms(100))
    );
    assert_eq!(tracker.slow_report_due(None), None, "log off");
    assert_eq!(
        tracker.handler_called(1, t1 + ms(150), slow_after).1,
        [None, seen(SlowStage::StillWaiting, ms(150))]
    );
    assert_eq!(
        tracker.handler_called(2, t1 + ms(200), slow_after).1,
        [None, None]
    );
    assert_eq!(tracker.slow_report_due(slow_after), None, "said once");
    tracker.chose_retry(t1 + ms(210), 10.0);
    // The next wait settles it as acquired, measured to its last retry.
    assert_eq!(
        tracker.handler_called(0, t1 + ms(300), slow_after).1,
        [seen(SlowStage::Acquired, ms(210)), None]
    );
    // A wait reported as still going on is reported at its end, whatever
    // the threshold is by then; one that was not, only if slow.
    assert_eq!(
        tracker.still_waiting(t1 + ms(320)),
        seen(SlowStage::StillWaiting, ms(20))
    );
    assert_eq!(
        tracker.gave_up(t1 + ms(330), None),
        seen(SlowStage::GaveUp, ms(30))
    );
    tracker.handler_called(0, t1 + ms(400), None);
    assert_eq!(tracker.gave_up(t1 + ms(900), None), None, "log off");
    tracker.handler_called(0, t1 + ms(1000), None);
    assert_eq!(
        tracker.gave_up(t1 + ms(1500), slow_after),
        seen(SlowStage::GaveUp, ms(500))
    );
    // Every wait counted, slow or not.
    assert_eq!(identity_of(&file.snapshot()), (5, 0, 2, 3));
}

#[test]
fn acquired_wait_is_provisional_then_settled() {
    let registry = Registry::default();
    let file = registry.file("/tmp/a.db");
    let tracker = WaitTracker::new(Arc::clone(&file));
    let t0 = Instant::now();

    let (ctx, _) = tracker.handler_called(0, t0, None);
    assert_eq!(
        (ctx.attempt, ctx.elapsed, ctx.first),
        (0, Duration::ZERO, true)
    );
    assert_eq!(identity_of(&file.snapshot()), (1, 1, 0, 0));

    tracker.chose_retry(t0 + ms(3), 3.0);
    let (ctx, _) = tracker.handler_called(1, t0 + ms(3), None);
    assert_eq!(
        (ctx.attempt, ctx.elapsed, ctx.previous_delay_ms, ctx.first),
        (1, ms(3), 3.0, false)
    );
    tracker.chose_retry(t0 + ms(10), 7.0);

    // Not called again: provisionally acquired, visible to readers.
    let s = file.snapshot();
    assert_eq!(identity_of(&s), (1, 0, 1, 0));
    assert_eq!(s.counts.handler_calls, 2);
    assert_eq!(s.counts.wait_max_us, 10_000);
    assert_eq!(registry.events().len(), 1);

    // Settling changes nothing a reader sees.
    tracker.settle(None);
    assert_eq!(identity_of(&file.snapshot()), identity_of(&s));
    assert_eq!(file.snapshot().counts.wait_max_us, 10_000);
    let events = registry.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].outcome, events[0].wait_us, events[0].retries),
        (Outcome::Acquired, 10_000, 2)
    );
}

#[test]
fn gave_up_wait_counts_once_with_full_length() {
    let registry = Registry::default();
    let file = registry.file("/tmp/b.db");
    let tracker = WaitTracker::new(Arc::clone(&file));
    let t0 = Instant::now();
    tracker.handler_called(0, t0, None);
    tracker.chose_retry(t0 + ms(40), 40.0);
    tracker.handler_called(1, t0 + ms(40), None);
    tracker.gave_up(t0 + ms(50), None);
    let s = file.snapshot();
    assert_eq!(identity_of(&s), (1, 0, 0, 1));
    assert_eq!(s.counts.wait_total_us, 50_000);
    assert_eq!(registry.events()[0].outcome, Outcome::GaveUp);
}

#[test]
fn new_wait_settles_the_previous_one() {
    let registry = Registry::default();
    let file = registry.file("/tmp/c.db");
    let tracker = WaitTracker::new(Arc::clone(&file));
    let t0 = Instant::now();
    for i in 0..5 {
        let start = t0 + ms(100 * i);
        tracker.handler_called(0, start, None);
        tracker.chose_retry(start + ms(2), 2.0);
    }
    let s = file.snapshot();
    assert_eq!(identity_of(&s), (5, 0, 5, 0));
    let p50 = s.counts.histogram.quantile_us(0.5).unwrap();
    assert!(
        (p50 - 2000.0).abs() / 2000.0 < 0.07,
        "p50 {p50} is not 2 ms within bucket error"
    );
}

#[test]
fn closing_connection_settles_and_uncounts_it() {
    let registry = Registry::default();
    let file = registry.file("/tmp/d.db");
    let a = WaitTracker::new(Arc::clone(&file));
    let b = WaitTracker::new(Arc::clone(&file));
    a.set_handler_installed(true);
    let s = file.snapshot();
    assert_eq!((s.connections, s.handler_active), (2, 1));
    let t0 = Instant::now();
    b.handler_called(0, t0, None);
    b.chose_retry(t0 + ms(1), 1.0);
    drop(b);
    let s = file.snapshot();
    assert_eq!((s.connections, s.counts.acquired), (1, 1));
    drop(a);
    assert_eq!(file.snapshot().connections, 0);
}

#[test]
fn reset_zeroes_counts_and_forgets_waits_in_progress() {
    let registry = Registry::default();
    let file = registry.file("/tmp/e.db");
    let tracker = WaitTracker::new(Arc::clone(&file));
    let t0 = Instant::now();
    tracker.handler_called(0, t0, None);
    tracker.chose_retry(t0 + ms(1), 1.0);
    tracker.handler_called(0, t0 + ms(5), None); // settles the first, starts a second
    registry.reset();
    assert_eq!(identity_of(&file.snapshot()), (0, 0, 0, 0));
    tracker.gave_up(t0 + ms(9), None); // the wait from before the reset
    assert_eq!(identity_of(&file.snapshot()), (0, 0, 0, 0));
    assert!(registry.events().is_empty());
    tracker.handler_called(0, t0 + ms(20), None);
    tracker.gave_up(t0 + ms(21), None);
    assert_eq!(identity_of(&file.snapshot()), (1, 0, 0, 1));
}

#[test]
fn event_ring_keeps_the_newest_within_capacity() {
    let registry = Registry::default();
    assert!(registry.set_event_capacity(0).is_err());
    assert!(registry.set_event_capacity(MAX_EVENT_CAPACITY + 1).is_err());
    registry.set_event_capacity(3).unwrap();
    let file = registry.file("/tmp/f.db");
    let tracker = WaitTracker::new(Arc::clone(&file));
    let t0 = Instant::now();
    for i in 0..10u64 {
        tracker.handler_called(0, t0, None);
        tracker.gave_up(t0 + ms(i + 1), None);
    }
    let events = registry.events();
    assert_eq!(
        events.iter().map(|e| e.wait_us).collect::<Vec<_>>(),
        vec![8000, 9000, 10_000]
    );
    registry.set_event_capacity(1).unwrap();
    assert_eq!(registry.events().len(), 1);
    assert_eq!(
        file.snapshot().counts.gave_up,
        10,
        "counters are not limited by the ring"
    );
}

#[test]
fn registry_forgets_idle_files_beyond_the_limit() {
    let registry = Registry::default();
    let kept = registry.file("/kept.db");
    for i in 0..(MAX_IDLE_FILES * 3) {
        registry.file(&format!("/tmp/idle-{i}.db"));
    }
    let files = registry.files();
    assert!(files.len() <= MAX_IDLE_FILES + 1, "{} files", files.len());
    assert!(files.iter().any(|f| Arc::ptr_eq(f, &kept)));
}

#[test]
fn concurrent_waits_add_up() {
    let registry = Arc::new(Registry::default());
    let file = registry.file("/tmp/g.db");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let file = Arc::clone(&file);
            std::thread::spawn(move || {
                let tracker = WaitTracker::new(Arc::clone(&file));
                for i in 0..500 {
                    let now = Instant::now();
                    tracker.handler_called(0, now, None);
                    if (i + t) % 3 == 0 {
                        tracker.gave_up(now, None);
                    } else {
                        tracker.chose_retry(now, 0.0);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = file.snapshot();
    assert_eq!(s.counts.acquired + s.counts.gave_up, 4000);
    let expected_gave_up: u64 = (0..8)
        .map(|t| (0..500).filter(|i| (i + t) % 3 == 0).count() as u64)
        .sum();
    assert_eq!(s.counts.gave_up, expected_gave_up);
}
