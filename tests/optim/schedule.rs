//! Learning-rate schedules against transformers' LambdaLR multipliers, bit for bit, at every
//! step from 0 to past the end; the learning rates a training loop reads; validation.

use polyadapt::engine::optim::{Decay, Schedule};
use polyadapt::Error;

use super::fixture::{Fixture, STEPS};

const KINDS: [(&str, Decay, f64); 4] = [
    ("linear", Decay::Linear, 0.0),
    ("cosine", Decay::Cosine, 0.0),
    ("constant", Decay::Constant, 0.0),
    ("cosine_min", Decay::Cosine, 0.1),
];
const SHAPES: [(u64, u64); 4] = [(3, 10), (0, 7), (4, 4), (2, 3)];

fn schedule(decay: Decay, min_lr_ratio: f64, warmup_steps: u64, total_steps: u64) -> Schedule {
    Schedule { warmup_steps, total_steps, decay, min_lr_ratio }
}

#[test]
fn multipliers_match_transformers_bitwise_from_step_0_to_past_the_end() {
    let fx = Fixture::load();
    for (kind, decay, min) in KINDS {
        for (w, t) in SHAPES {
            let want = fx.f64s(&format!("schedule.{kind}.w{w}.t{t}"));
            assert_eq!(want.len() as u64, t + 4);
            let s = schedule(decay, min, w, t);
            for (step, &want) in want.iter().enumerate() {
                let got = s.factor(step as u64);
                assert_eq!(got.to_bits(), want.to_bits(), "{kind} w{w} t{t} step {step}: {got} != {want}");
            }
        }
    }
}

#[test]
fn landmarks_step_0_end_of_warmup_last_step_and_past_the_end() {
    let lin = schedule(Decay::Linear, 0.0, 3, 10);
    let cos = schedule(Decay::Cosine, 0.0, 3, 10);
    let cos_min = schedule(Decay::Cosine, 0.1, 3, 10);
    let lin_min = schedule(Decay::Linear, 0.25, 3, 10);
    for s in [lin, cos, cos_min, lin_min] {
        assert_eq!(s.factor(0), 0.0, "{s:?}: warm-up starts at 0");
        assert_eq!(s.factor(3), 1.0, "{s:?}: the peak at the end of warm-up");
    }
    assert_eq!(lin.factor(10), 0.0);
    assert_eq!(lin.factor(25), 0.0, "linear stays at 0 past the end");
    assert_eq!(cos.factor(10), 0.0);
    assert_eq!(cos_min.factor(10), 0.1);
    assert_eq!(lin_min.factor(10), 0.25);
    assert_eq!(lin_min.factor(40), 0.25, "the floor holds past the end");
    assert!(lin.factor(9) > 0.0 && lin.factor(9) < lin.factor(8), "the last step still learns");
    // transformers' cosine is not clamped: past the end it rises again.
    assert!(cos.factor(11) > 0.0);
    // No warm-up: the first update runs at the peak.
    assert_eq!(schedule(Decay::Cosine, 0.0, 0, 7).factor(0), 1.0);
}

#[test]
fn learning_rates_are_what_a_transformers_loop_reads_before_each_step() {
    let fx = Fixture::load();
    let lrs = fx.f64s("lr");
    assert_eq!(lrs.len(), STEPS);
    let s = schedule(Decay::Linear, 0.0, 3, 10);
    for (k, &want) in lrs.iter().enumerate() {
        let got = s.lr_at(1e-2, k as u64);
        assert_eq!(got.to_bits(), want.to_bits(), "step {k}: {got} != {want}");
    }
}

#[test]
fn bad_schedules_are_clear_errors() {
    for (s, what) in [
        (schedule(Decay::Cosine, 1.5, 0, 10), "min_lr_ratio"),
        (schedule(Decay::Linear, f64::NAN, 0, 10), "min_lr_ratio"),
        (schedule(Decay::Linear, 0.0, 20, 10), "warm-up"),
    ] {
        match s.validate() {
            Err(Error::Usage(msg)) => assert!(msg.contains(what), "{msg}"),
            other => panic!("{s:?}: expected a usage error, got {other:?}"),
        }
    }
    schedule(Decay::Constant, 0.0, 20, 10).validate().unwrap();
    schedule(Decay::Cosine, 0.0, 10, 10).validate().unwrap();
}
