//! The rollout reconciler, directly: a table of situations and the action each calls for, and a
//! property test that drives every strategy and kind through random worlds — instances dying
//! between steps, rollbacks and promotions asked mid-step, judgements either way — checking the
//! invariants the controller promises.

use proptest::prelude::*;
use rollout::reconcile::{Action, Gate, Judgement, Kind, Observed, Plan, Strategy as Moves, decide};

fn plan(strategy: Moves) -> Plan {
    Plan { kind: Kind::Deploy, strategy, instances: 3, alpha: 0.01 }
}

fn canary() -> Plan {
    plan(Moves::Canary { weights: vec![0.1, 0.5, 1.0] })
}

fn started() -> Observed {
    Observed { started: true, has_stable: true, n_stable: 3, ..Observed::default() }
}

#[test]
fn gates_hold_a_deployment_before_it_starts_and_rollbacks_pass_them() {
    let waiting = Observed { has_stable: true, n_stable: 3, ..Observed::default() };
    let p = canary();
    assert_eq!(decide(&p, &Observed { superseded_by: Some(9), ..waiting.clone() }), Action::Skip { newer: 9 });
    assert!(matches!(
        decide(&p, &Observed { rollback_requested: true, ..waiting.clone() }),
        Action::RollBack { step: 0, weight: 0.0, ref reason, .. } if reason == "rolled back before it started"
    ));
    let frozen = Observed { held_by: Some(Gate::Freeze), ..waiting.clone() };
    assert_eq!(decide(&p, &frozen), Action::Hold { gate: Gate::Freeze, record: true });
    let recorded = Observed { recorded_gate: Some(Gate::Freeze), ..frozen.clone() };
    assert_eq!(decide(&p, &recorded), Action::Hold { gate: Gate::Freeze, record: false }, "one event per gate");
    let approval = Observed { held_by: Some(Gate::Approval), ..recorded };
    assert_eq!(decide(&p, &approval), Action::Hold { gate: Gate::Approval, record: true });
    assert_eq!(decide(&p, &waiting), Action::Start);
    for kind in [Kind::Rollback, Kind::Emergency] {
        assert_eq!(decide(&Plan { kind, ..canary() }, &frozen), Action::Start, "{kind:?} passes the gates");
    }
}

#[test]
fn a_rollback_to_the_warm_release_is_a_switch() {
    let warm = Observed { warm_is_target: true, ..started() };
    let back = Plan { kind: Kind::Rollback, ..plan(Moves::BlueGreen { preview_ms: 1, keep_old_ms: 1 }) };
    assert_eq!(decide(&back, &warm), Action::SwitchToWarm);
    assert_eq!(decide(&canary(), &warm), Action::StartNew { total: 3 }, "a new release is never a switch");
}

#[test]
fn the_first_release_and_an_emergency_are_promoted_once_ready() {
    let first = Observed { has_stable: false, n_stable: 0, ..started() };
    assert_eq!(decide(&canary(), &first), Action::StartNew { total: 3 });
    let ready = Observed { n_new: 3, ..first };
    assert!(
        matches!(decide(&canary(), &ready), Action::Promote { reason: Some(r), .. } if r.contains("first release"))
    );
    let emergency = Plan { kind: Kind::Emergency, ..plan(Moves::Rolling { max_surge: 1, max_unavailable: 0 }) };
    assert_eq!(decide(&emergency, &started()), Action::StartNew { total: 3 }, "an emergency starts all at once");
    let ready = Observed { n_new: 3, ..started() };
    assert!(matches!(decide(&emergency, &ready), Action::Promote { reason: Some(r), .. } if r.contains("emergency")));
}

#[test]
fn a_resumed_canary_goes_on_from_the_stored_step() {
    let resumed = Observed { step: 1, ..started() };
    assert_eq!(decide(&canary(), &resumed), Action::StartNew { total: 3 }, "new instances first");
    let ready = Observed { n_new: 3, ..resumed };
    assert_eq!(decide(&canary(), &ready), Action::Step { index: 1, weight: 0.5, keep_stable: None });
}

#[test]
fn rollback_requests_and_dead_instances_roll_back_mid_step() {
    let judging = Observed { n_new: 3, at: Some(1), ..started() };
    let asked = Observed { rollback_requested: true, ..judging.clone() };
    assert_eq!(
        decide(&canary(), &asked),
        Action::RollBack { reason: "rollback requested".into(), step: 1, weight: 0.5, restore_stable: None }
    );
    // An instance that died between steps: the judgement was healthy, the next step never comes.
    let died = Observed { judged: Some(Judgement::Healthy), new_failure: Some("exited with 3".into()), ..judging };
    assert!(matches!(
        decide(&canary(), &died),
        Action::RollBack { ref reason, step: 1, .. } if reason == "failed health check: exited with 3"
    ));
    let failed =
        Observed { n_new: 3, at: Some(0), judged: Some(Judgement::Failed { reason: "errors".into() }), ..started() };
    assert_eq!(
        decide(&canary(), &failed),
        Action::RollBack { reason: "errors".into(), step: 0, weight: 0.1, restore_stable: None }
    );
}

#[test]
fn a_manual_promotion_skips_the_remaining_steps() {
    let judging = Observed { n_new: 3, at: Some(0), promote_requested: true, ..started() };
    assert_eq!(decide(&canary(), &judging), Action::Promote { reason: None, keep_old_ms: None });
}

#[test]
fn blue_green_previews_for_its_time_then_switches_and_keeps_the_old_release_warm() {
    let p = plan(Moves::BlueGreen { preview_ms: 60_000, keep_old_ms: 600_000 });
    let ready = Observed { n_new: 3, ..started() };
    assert_eq!(decide(&p, &ready), Action::Preview);
    let previewing = Observed { at: Some(0), preview_ms: 15_000, ..ready };
    assert_eq!(decide(&p, &previewing), Action::WaitPreview { remaining_ms: 45_000 });
    let done = Observed { preview_ms: 60_000, ..previewing };
    assert_eq!(decide(&p, &done), Action::Promote { reason: None, keep_old_ms: Some(600_000) });
}

#[test]
fn rolling_with_surge_adds_before_it_removes_and_without_surge_removes_first() {
    let surge = plan(Moves::Rolling { max_surge: 1, max_unavailable: 0 });
    let o = started();
    assert_eq!(decide(&surge, &o), Action::StartNew { total: 1 });
    let o = Observed { n_new: 1, ..o };
    assert_eq!(decide(&surge, &o), Action::Step { index: 0, weight: 1.0 / 3.0, keep_stable: Some(2) });

    let no_surge = plan(Moves::Rolling { max_surge: 0, max_unavailable: 1 });
    let o = started();
    assert_eq!(decide(&no_surge, &o), Action::RetireStable { keep: 2 });
    let o = Observed { n_stable: 2, ..o };
    assert_eq!(decide(&no_surge, &o), Action::StartNew { total: 1 });
    let failed = Observed { new_failure: Some("never ready".into()), ..o };
    assert!(matches!(decide(&no_surge, &failed), Action::RollBack { restore_stable: Some(3), .. }));
}

/// A random world: what happens between two decisions.
#[derive(Debug, Clone)]
struct Event {
    rollback: bool,
    promote: bool,
    instance_dies: bool,
    healthy: bool,
}

fn event() -> impl Strategy<Value = Event> {
    (0u8..100, 0u8..100, 0u8..100, any::<bool>()).prop_map(|(r, p, d, healthy)| Event {
        rollback: r < 4,
        promote: p < 4,
        instance_dies: d < 4,
        healthy,
    })
}

fn any_plan() -> impl Strategy<Value = Plan> {
    let strategy = prop_oneof![
        proptest::collection::vec(1u8..100, 1..5).prop_map(|mut w| {
            w.sort_unstable();
            w.dedup();
            let mut weights: Vec<f64> = w.into_iter().map(|p| p as f64 / 100.0).collect();
            weights.push(1.0);
            Moves::Canary { weights }
        }),
        (0u64..5, 0u64..5).prop_map(|(p, k)| Moves::BlueGreen { preview_ms: p * 1000, keep_old_ms: k * 1000 }),
        (0usize..3, 0usize..3).prop_map(|(s, u)| Moves::Rolling { max_surge: s, max_unavailable: u }),
    ];
    let kind = prop_oneof![Just(Kind::Deploy), Just(Kind::Rollback), Just(Kind::Emergency)];
    (strategy, kind, 1usize..6).prop_map(|(strategy, kind, instances)| Plan { kind, strategy, instances, alpha: 0.01 })
}

proptest! {
    #[test]
    fn every_rollout_ends_and_keeps_the_controllers_promises(
        plan in any_plan(),
        has_stable in any::<bool>(),
        resume_at in 0usize..4,
        events in proptest::collection::vec(event(), 200),
    ) {
        let n = plan.instances;
        // A rolling update proper (an emergency, or a first release, starts everything at once).
        let surge = match plan.strategy {
            Moves::Rolling { max_surge, .. } if has_stable && plan.kind != Kind::Emergency => max_surge,
            _ => n,
        };
        let mut o = Observed {
            started: false,
            step: resume_at,
            has_stable,
            n_stable: if has_stable { n } else { 0 },
            ..Observed::default()
        };
        let mut alpha_spent = 0.0;
        let mut last_step: Option<usize> = None;
        let mut ended = None;
        for event in &events {
            let action = decide(&plan, &o);
            // Traffic never reaches new instances that are not all there.
            if let Action::Step { weight, .. } = &action {
                prop_assert!(o.n_new > 0 && *weight > 0.0 && *weight <= 1.0, "{action:?} with {o:?}");
                if !matches!(plan.strategy, Moves::Rolling { .. }) {
                    prop_assert_eq!(o.n_new, n);
                }
            }
            // Once started, a rollback request or a dead instance is acted on at once.
            if o.started && (o.rollback_requested || o.new_failure.is_some()) && !(plan.kind != Kind::Deploy && o.warm_is_target) {
                prop_assert!(matches!(action, Action::RollBack { .. }), "{action:?} after a rollback reason, {o:?}");
            }
            if action.ends() {
                ended = Some(action);
                break;
            }
            match action {
                Action::Hold { .. } | Action::Skip { .. } => prop_assert!(false, "no gate or newer deployment here"),
                Action::Start => o.started = true,
                Action::StartNew { total } => o.n_new = total,
                Action::RetireStable { keep } => {
                    prop_assert!(keep < o.n_stable);
                    o.n_stable = keep;
                }
                Action::Step { index, keep_stable, .. } => {
                    // Steps only move forward (a resumed deployment goes on from its stored step).
                    prop_assert!(last_step.is_none_or(|last| index > last), "step {index} after {last_step:?}");
                    last_step = Some(index);
                    if let Some(keep) = keep_stable {
                        o.n_stable = keep;
                    }
                    o.at = Some(index);
                    o.judged = None;
                }
                Action::Preview => o.at = Some(0),
                Action::WaitPreview { remaining_ms } => o.preview_ms += remaining_ms.min(1000),
                Action::Judge { alpha, .. } => {
                    alpha_spent += alpha;
                    o.judged = Some(if event.healthy { Judgement::Healthy } else { Judgement::Failed { reason: "worse".into() } });
                }
                Action::SwitchToWarm | Action::Promote { .. } | Action::RollBack { .. } => unreachable!(),
            }
            // Rolling: never more than the count plus the surge.
            prop_assert!(o.n_stable + o.n_new <= n + surge, "{} + {} > {n} + {surge}", o.n_stable, o.n_new);
            o.rollback_requested |= event.rollback;
            o.promote_requested |= event.promote;
            if event.instance_dies && o.n_new > 0 {
                o.new_failure = Some("liveness".into());
            }
        }
        let ended = ended.expect("a rollout ends within 200 decisions");
        // α bounds the whole rollout.
        prop_assert!(alpha_spent <= plan.alpha + 1e-12, "α spent {alpha_spent}");
        if let Action::Promote { reason: None, .. } = ended {
            prop_assert!(o.new_failure.is_none() && !o.rollback_requested);
        }
    }
}
