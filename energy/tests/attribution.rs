//! Sharing a counter's energy among accounts: the arithmetic of one window, and the sampler on a
//! counter the test drives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use energy::attribution::{share, Accounts, Report, Sampler, SamplerConfig, Window, METER_ACCOUNT};
use energy::counters::ScriptedCounter;
use energy::{Accounting, Joules, Source};

fn j(x: f64) -> Joules {
    Joules::new(x).unwrap()
}

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

fn close(a: Joules, b: f64) -> bool {
    (a.get() - b).abs() < 1e-9
}

#[test]
fn shares_follow_modelled_cost_and_add_up_to_the_measurement() {
    let window = Window {
        measured: j(2.0),
        capacity: ms(200),
        polling: ms(2),
        accounts: vec![(j(1e-6), ms(20)), (j(3e-6), ms(60)), (Joules::ZERO, Duration::ZERO)],
    };
    let shares = share(&window);
    // Handlers ran 80 ms of 200: 0.8 J, split 1:3:0.
    assert!(close(shares.accounts[0], 0.2) && close(shares.accounts[1], 0.6) && close(shares.accounts[2], 0.0));
    assert!(close(shares.polling, 0.02));
    assert!(close(shares.unattributed, 1.18));
    let total: f64 = shares.accounts.iter().map(|x| x.get()).sum::<f64>() + shares.polling.get() + shares.unattributed.get();
    assert!((total - 2.0).abs() < 1e-12);
}

#[test]
fn unmodelled_runs_share_by_running_time_and_nothing_exceeds_the_measurement() {
    let unmodelled = Window {
        measured: j(1.0),
        capacity: ms(100),
        polling: Duration::ZERO,
        accounts: vec![(Joules::ZERO, ms(10)), (Joules::ZERO, ms(30))],
    };
    let shares = share(&unmodelled);
    assert!(close(shares.accounts[0], 0.1) && close(shares.accounts[1], 0.3) && close(shares.unattributed, 0.6));

    // Running time beyond the capacity (a handler preempted mid-run) cannot claim more than all of it.
    let crowded = Window { measured: j(1.0), capacity: ms(10), polling: ms(5), accounts: vec![(j(1.0), ms(50))] };
    let shares = share(&crowded);
    assert!(close(shares.accounts[0], 1.0) && close(shares.polling, 0.0) && close(shares.unattributed, 0.0));

    let idle = Window { measured: j(0.5), capacity: ms(100), polling: Duration::ZERO, accounts: vec![] };
    assert!(close(share(&idle).unattributed, 0.5));
    let empty = Window { measured: j(0.5), capacity: Duration::ZERO, polling: Duration::ZERO, accounts: vec![(j(1.0), ms(1))] };
    assert!(close(share(&empty).unattributed, 0.5), "no capacity, nothing to share by");
}

#[test]
fn the_sampler_reconciles_with_the_counter_and_charges_its_own_polling() {
    let dial = ScriptedCounter::new(Source::Rapl);
    let accounts = Accounts::new(Accounting::Tutorial);
    let reports: Arc<Mutex<Vec<Report>>> = Arc::default();
    let sink = reports.clone();
    let config = SamplerConfig { every: ms(5), report_every: ms(20) };
    let sampler =
        Sampler::start(Box::new(dial.clone()), accounts.clone(), config, Box::new(move |r| sink.lock().unwrap().push(r.clone())))
            .unwrap();
    let node = accounts.open("node-manager");
    let comm = accounts.open("communication-manager");
    assert!(Arc::ptr_eq(&node, &accounts.open("node-manager")), "one account per actor");
    for round in 0..10 {
        node.record(j(1e-6), Duration::from_micros(300), Some(j(1e-6)));
        comm.record(j(3e-6), Duration::from_micros(900), Some(j(3e-6)));
        dial.add(0.25);
        if round == 4 {
            dial.fail_next();
        }
        std::thread::sleep(ms(7));
    }
    let totals = sampler.stop();

    assert!(close(totals.measured, 2.5), "every joule the counter counted is reported: {totals:#?}");
    assert!((totals.accounted().get() - 2.5).abs() < 1e-9, "attributed + unattributed = measured: {totals:#?}");
    assert_eq!(totals.failed_reads, 1, "the failed reading is counted, and its energy moved on");
    let (node, comm) = (&totals.lines["node-manager"], &totals.lines["communication-manager"]);
    assert_eq!((node.runs, comm.runs), (10, 10));
    assert!(close(node.modelled, 1e-5) && close(comm.modelled, 3e-5));
    assert!(comm.attributed > node.attributed && node.attributed > Joules::ZERO);
    let meter = &totals.lines[METER_ACCOUNT];
    assert!(meter.busy > Duration::ZERO && meter.attributed > Joules::ZERO, "measuring is charged: {meter:?}");
    assert!(totals.unattributed > Joules::ZERO, "a mostly idle machine leaves most energy unattributed");
    assert_eq!((totals.source, totals.counter.as_str()), (Source::Rapl, "scripted"));

    // The reports, summed, are the totals.
    let reports = reports.lock().unwrap();
    assert!(reports.len() >= 2, "reported every 20 ms and at the stop");
    let sum: f64 = reports.iter().map(|r| r.measured.get()).sum();
    assert!((sum - 2.5).abs() < 1e-9);
}

#[test]
fn physical_accounting_corrects_each_budget_to_the_share_its_admitted_runs_earned() {
    let dial = ScriptedCounter::new(Source::Rapl);
    let accounts = Accounts::new(Accounting::Physical);
    let config = SamplerConfig { every: ms(5), report_every: ms(20) };
    let sampler = Sampler::start(Box::new(dial.clone()), accounts.clone(), config, Box::new(|_| {})).unwrap();
    let worker = accounts.open("worker-pool");
    let guarded = accounts.open("node-manager");
    let mut owed = [0.0f64; 2];
    for _ in 0..10 {
        worker.record(j(2e-6), Duration::from_micros(500), Some(j(2e-6)));
        // Half of the node manager's modelled cost is a refusal: its share is measured, not charged.
        guarded.record(j(1e-6), Duration::from_micros(200), Some(j(1e-6)));
        guarded.record(j(1e-6), Duration::from_micros(200), None);
        dial.add(0.5);
        std::thread::sleep(ms(7));
        owed[0] += worker.take_correction();
        owed[1] += guarded.take_correction();
    }
    let totals = sampler.stop();
    owed[0] += worker.take_correction();
    owed[1] += guarded.take_correction();

    assert_eq!(totals.accounting, Accounting::Physical);
    let (w, g) = (&totals.lines["worker-pool"], &totals.lines["node-manager"]);
    assert_eq!((w.refused, g.refused, g.runs), (0, 10, 20));
    // What the gates were told to apply is what the report says was corrected.
    assert!((owed[0] - w.correction_j).abs() < 1e-9 && (owed[1] - g.correction_j).abs() < 1e-9, "{owed:?} {totals:#?}");
    // The worker pays its whole share; the node manager the half its admitted runs earned.
    assert!((w.paid() - w.attributed.get()).abs() < 1e-9, "{w:?}");
    assert!((g.paid() - g.attributed.get() / 2.0).abs() < 1e-9, "{g:?}");
    assert!(w.correction_j > 0.0, "a mostly idle machine's handlers cost more than 2 µJ a run: {w:?}");
    // Budgets + the refusals' share + the sampler's + the unattributed rest = the counter.
    let refusals = g.attributed.get() - g.paid();
    let sum = w.paid() + g.paid() + refusals + totals.lines[METER_ACCOUNT].attributed.get() + totals.unattributed.get();
    assert!((sum - totals.measured.get()).abs() < 1e-9, "{sum} vs {}", totals.measured);
    assert!(close(totals.measured, 5.0));
}

#[test]
fn tutorial_accounting_corrects_nothing() {
    let dial = ScriptedCounter::new(Source::Rapl);
    let accounts = Accounts::new(Accounting::Tutorial);
    let sampler =
        Sampler::start(Box::new(dial.clone()), accounts.clone(), SamplerConfig { every: ms(2), report_every: ms(10) }, Box::new(|_| {}))
            .unwrap();
    let actor = accounts.open("a");
    actor.record(j(1e-6), ms(1), Some(j(10.0)));
    dial.add(1.0);
    std::thread::sleep(ms(10));
    let totals = sampler.stop();
    assert_eq!(actor.take_correction(), 0.0);
    assert_eq!(totals.lines["a"].correction_j, 0.0);
    assert!(close(totals.lines["a"].charged, 10.0));
}
