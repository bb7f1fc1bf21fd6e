import numpy as np
import pytest

from tests.parity import ParityError, assert_all_close, assert_close, assert_three_way


def test_assert_close_names_tensor_and_difference_when_perturbed():
    x = np.zeros((2, 3), np.float32)
    y = x.copy()
    y[1, 2] = 1e-3
    with pytest.raises(ParityError, match=r"logits: max \|diff\| 1\.000e-03 > 1\.0e-05 at index \(1, 2\)"):
        assert_close("logits", y, x, 1e-5)


def test_assert_close_passes_within_tolerance_and_reports_the_difference():
    x = np.ones(4, np.float64)
    assert assert_close("h", x + 1e-7, x, 1e-5) == pytest.approx(1e-7, rel=1e-2)


def test_assert_close_rejects_shape_mismatch_and_nan():
    with pytest.raises(ParityError, match="shape"):
        assert_close("a", np.zeros(3), np.zeros(4), 1.0)
    with pytest.raises(ParityError, match="non-finite"):
        assert_close("a", np.array([np.nan]), np.array([0.0]), 1.0)


def test_assert_all_close_names_the_missing_key():
    with pytest.raises(ParityError, match="attentions: missing"):
        assert_all_close({"logits": np.zeros(1)}, {"logits": np.zeros(1), "attentions": np.zeros(1)}, 1e-5)


def test_three_way_rule_fails_when_error_exceeds_plain_bar():
    ref = np.zeros(8)
    plain = ref + 1e-3
    with pytest.raises(ParityError, match="bar"):
        assert_three_way("k", ref + 1e-1, plain, ref, 2.0, 1e-4)
    assert_three_way("k", ref + 1.5e-3, plain, ref, 2.0, 1e-4)
