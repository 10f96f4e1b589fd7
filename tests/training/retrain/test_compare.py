"""The promotion rule: when ``decide`` promotes a candidate over production (margin and floor)."""

from training.retrain.compare import decide


def test_decide_promotes_an_equal_candidate_with_zero_margin():
    assert decide(0.9, 0.9, margin=0.0, floor=0.0)[0]


def test_decide_refuses_when_the_margin_is_not_met():
    promote, reason = decide(0.905, 0.9, margin=0.01, floor=0.0)
    assert not promote and "0.9050 < production 0.9000" in reason


def test_decide_negative_margin_tolerates_a_small_drop():
    assert decide(0.895, 0.9, margin=-0.01, floor=0.0)[0]


def test_decide_first_run_needs_the_floor():
    assert decide(0.6, None, margin=0.0, floor=0.5)[0]
    promote, reason = decide(0.4, None, margin=0.0, floor=0.5)
    assert not promote and "below the floor" in reason


def test_decide_floor_applies_even_when_better_than_production():
    assert not decide(0.45, 0.40, margin=0.0, floor=0.5)[0]
