"""Tests for ``sasi_scipion.engine.metrics`` on hand-made occupancy maps and tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sasi_scipion.engine.cli import CZII_REPORT, main
from sasi_scipion.engine.coordinates import ParticleTable, write_particles
from sasi_scipion.engine.errors import SasiInputError
from sasi_scipion.engine.metrics import (
    CZII_WEIGHTS,
    Evaluation,
    Scores,
    dilate_occupancy,
    evaluate_czii,
    evaluate_distance,
    evaluate_occupancy,
)
from sasi_scipion.engine.mrc_io import write_volume

# Truth centres, voxels (x, y, z); each particle is a 3 x 3 x 3 cube around its centre.
TRUTH_XYZ = [[4, 4, 4], [14, 8, 4], [4, 14, 14]]
TRUTH_CLASSES = ["a", "b", "vesicle"]


def _occupancy() -> np.ndarray:
    """20^3 ``(z, y, x)`` map holding truth row number + 1 in each particle's cube."""
    occ = np.zeros((20, 20, 20), dtype=np.int64)
    for row, (x, y, z) in enumerate(TRUTH_XYZ, start=1):
        occ[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = row
    return occ


def _truth() -> ParticleTable:
    return ParticleTable(TRUTH_XYZ, TRUTH_CLASSES)


def _picks(xyz: list[list[float]], classes: list[str], scores=None) -> ParticleTable:
    return ParticleTable(np.array(xyz, dtype=float).reshape(-1, 3), classes, scores)


def _counts(s: Scores) -> tuple[int, int, int]:
    return s.tp, s.fp, s.fn


# --- Scores ---------------------------------------------------------------------------------


def test_scores_ratios():
    s = Scores(tp=3, fp=1, fn=2)
    assert s.precision == pytest.approx(0.75)
    assert s.recall == pytest.approx(0.6)
    assert s.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)


def test_scores_undefined_ratios_are_zero():
    s = Scores(0, 0, 0)
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    assert Scores(0, 4, 0).f1 == 0.0


# --- dilation -------------------------------------------------------------------------------


def test_dilation_is_a_six_connected_cross():
    occ = np.zeros((5, 5, 5), dtype=np.int64)
    occ[2, 2, 2] = 7
    grown = dilate_occupancy(occ)
    assert (grown == 7).sum() == 7
    for dz, dy, dx in [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]:
        assert grown[2 + dz, 2 + dy, 2 + dx] == 7
    assert grown[3, 3, 2] == 0  # edge-diagonal neighbour stays background


def test_dilation_keeps_labels_and_breaks_ties_deterministically():
    occ = np.zeros((1, 1, 5), dtype=np.int64)
    occ[0, 0, 1], occ[0, 0, 3] = 2, 5
    grown = dilate_occupancy(occ)
    assert grown.tolist() == [[[2, 2, 5, 5, 5]]]
    assert occ.tolist() == [[[0, 2, 0, 5, 0]]]  # input untouched


# --- SHREC 2021 occupancy rule ---------------------------------------------------------------


def test_perfect_picks():
    picks = _picks(TRUTH_XYZ[:2], TRUTH_CLASSES[:2])
    result = evaluate_occupancy(picks, _truth(), _occupancy())
    assert result.rule == "shrec2021-occupancy"
    assert _counts(result.pooled) == (2, 0, 0)
    assert (result.pooled.precision, result.pooled.recall, result.pooled.f1) == (1.0, 1.0, 1.0)
    assert set(result.per_class) == {"a", "b"}
    assert all(s.f1 == 1.0 for s in result.per_class.values())


def test_picks_shifted_off_every_particle():
    picks = _picks([[x + 5, y, z] for x, y, z in TRUTH_XYZ[:2]], TRUTH_CLASSES[:2])
    result = evaluate_occupancy(picks, _truth(), _occupancy())
    assert _counts(result.pooled) == (0, 2, 2)
    assert result.pooled.f1 == 0.0


def test_axis_order_is_x_y_z_against_z_y_x_volume():
    # particle "b" sits at x=14, y=8, z=4; the transposed point must miss
    hit = evaluate_occupancy(_picks([[14, 8, 4]], ["b"]), _truth(), _occupancy())
    miss = evaluate_occupancy(_picks([[4, 8, 14]], ["b"]), _truth(), _occupancy())
    assert hit.pooled.tp == 1
    assert miss.pooled.tp == 0


@pytest.mark.parametrize(
    ("x", "tp"),
    [(5, 1), (6, 1), (6.4, 1), (6.6, 0), (7, 0)],
)
def test_dilation_reaches_one_voxel_past_the_edge(x, tp):
    # particle "a" occupies x in 3..5; the dilated map reaches x = 6 only
    result = evaluate_occupancy(_picks([[x, 4, 4]], ["a"]), _truth(), _occupancy())
    assert result.pooled.tp == tp
    assert result.pooled.fp == 1 - tp


def test_dilation_does_not_reach_diagonally():
    result = evaluate_occupancy(_picks([[6, 6, 4]], ["a"]), _truth(), _occupancy())
    assert _counts(result.pooled) == (0, 1, 2)


def test_duplicate_picks_on_one_particle():
    picks = _picks([[4, 4, 4], [5, 4, 4], [14, 8, 4]], ["a", "a", "b"])
    result = evaluate_occupancy(picks, _truth(), _occupancy())
    assert _counts(result.pooled) == (2, 1, 0)
    assert _counts(result.per_class["a"]) == (1, 1, 0)
    assert _counts(result.per_class["b"]) == (1, 0, 0)


def test_background_and_outside_picks_are_false_positives():
    picks = _picks([[10, 10, 10], [-3, 4, 4], [4, 4, 25], [4, 4, 4]], ["a"] * 4)
    result = evaluate_occupancy(picks, _truth(), _occupancy())
    assert _counts(result.pooled) == (1, 3, 1)
    assert _counts(result.per_class["a"]) == (1, 3, 0)
    assert _counts(result.per_class["b"]) == (0, 0, 1)


def test_unscored_particles_are_ignored():
    # one pick on the vesicle (any label), one real hit; the vesicle is never a miss
    picks = _picks([[4, 14, 14], [5, 14, 14], [4, 4, 4]], ["vesicle", "a", "a"])
    result = evaluate_occupancy(picks, _truth(), _occupancy())
    assert _counts(result.pooled) == (1, 0, 1)
    assert "vesicle" not in result.per_class
    assert _counts(result.per_class["a"]) == (1, 0, 0)


def test_unscored_names_are_configurable():
    picks = _picks([[4, 14, 14]], ["vesicle"])
    result = evaluate_occupancy(picks, _truth(), _occupancy(), unscored=())
    assert _counts(result.pooled) == (1, 0, 2)
    assert _counts(result.per_class["vesicle"]) == (1, 0, 0)


def test_per_class_wrong_label():
    # the pick on particle "a" is labelled "b": pooled hit, per-class miss on both sides
    picks = _picks([[4, 4, 4], [14, 8, 4]], ["b", "b"])
    result = evaluate_occupancy(picks, _truth(), _occupancy())
    assert _counts(result.pooled) == (2, 0, 0)
    assert _counts(result.per_class["a"]) == (0, 0, 1)
    assert _counts(result.per_class["b"]) == (1, 1, 0)


def test_pick_class_missing_from_truth_is_reported():
    result = evaluate_occupancy(_picks([[4, 4, 4]], ["c"]), _truth(), _occupancy())
    assert _counts(result.pooled) == (1, 0, 1)
    assert _counts(result.per_class["c"]) == (0, 1, 0)


def test_counts_do_not_depend_on_row_order():
    # both picks hit particle "a" with different labels; scores decide the order
    xyz, classes, scores = [[4, 4, 4], [4, 4, 5]], ["a", "b"], [0.2, 0.9]
    for order in ([0, 1], [1, 0]):
        picks = _picks([xyz[i] for i in order], [classes[i] for i in order],
                       scores=[scores[i] for i in order])
        result = evaluate_occupancy(picks, _truth(), _occupancy())
        assert _counts(result.pooled) == (1, 1, 1)
        assert _counts(result.per_class["a"]) == (1, 0, 0)
        assert _counts(result.per_class["b"]) == (0, 1, 1)


def test_non_integer_occupancy_is_rejected():
    occ = _occupancy().astype(float)
    occ[0, 0, 0] = 0.5
    with pytest.raises(SasiInputError, match="non-integer"):
        evaluate_occupancy(_picks([[4, 4, 4]], ["a"]), _truth(), occ)


def test_float_occupancy_with_whole_ids_is_accepted():
    occ = _occupancy().astype(np.float32)
    result = evaluate_occupancy(_picks([[4, 4, 4]], ["a"]), _truth(), occ)
    assert _counts(result.pooled) == (1, 0, 1)


def test_no_picks():
    result = evaluate_occupancy(ParticleTable.empty(), _truth(), _occupancy())
    assert _counts(result.pooled) == (0, 0, 2)
    assert result.pooled.f1 == 0.0


def test_occupancy_must_be_3d():
    with pytest.raises(SasiInputError, match="3D"):
        evaluate_occupancy(_picks([[4, 4, 4]], ["a"]), _truth(), _occupancy()[0])


def test_occupancy_must_match_truth_table():
    occ = _occupancy()
    occ[18, 18, 18] = 4
    with pytest.raises(SasiInputError, match="do not match.*truth .tsv"):
        evaluate_occupancy(_picks([[4, 4, 4]], ["a"]), _truth(), occ)


# --- distance rule --------------------------------------------------------------------------


def test_distance_perfect_and_miss():
    truth = ParticleTable([[0, 0, 0], [10, 0, 0]], ["a", "b"])
    radii = {"a": 2.0, "b": 2.0}
    result = evaluate_distance(_picks([[0, 0, 1], [10, 1, 0]], ["a", "b"]), truth, radii)
    assert result.rule == "distance"
    assert _counts(result.pooled) == (2, 0, 0)
    far = evaluate_distance(_picks([[0, 0, 3], [13, 0, 0]], ["a", "b"]), truth, radii)
    assert _counts(far.pooled) == (0, 2, 2)


def test_distance_radius_is_the_true_particle_class_radius():
    truth = ParticleTable([[0, 0, 0], [20, 0, 0]], ["small", "big"])
    radii = {"small": 1.0, "big": 5.0}
    picks = _picks([[3, 0, 0], [23, 0, 0]], ["big", "small"])
    result = evaluate_distance(picks, truth, radii)
    assert _counts(result.pooled) == (1, 1, 1)


def test_distance_greedy_one_to_one():
    # truth A at x=0, B at x=4; p1 (best score) is nearer A but also within B's radius,
    # p2 reaches only A: ascending-distance matching pairs p2-A then p1-B
    truth = ParticleTable([[0, 0, 0], [4, 0, 0]], ["a", "a"])
    picks = _picks([[1.9, 0, 0], [0.5, 0, 0]], ["a", "a"], scores=[0.9, 0.1])
    result = evaluate_distance(picks, truth, {"a": 3.0})
    assert _counts(result.pooled) == (2, 0, 0)
    assert _counts(result.per_class["a"]) == (2, 0, 0)


def test_distance_duplicates_count_once():
    truth = ParticleTable([[5, 5, 5]], ["a"])
    picks = _picks([[5, 5, 5], [5, 5, 6]], ["a", "a"])
    result = evaluate_distance(picks, truth, {"a": 2.0})
    assert _counts(result.pooled) == (1, 1, 0)


def test_distance_per_class_matches_only_same_class():
    truth = ParticleTable([[0, 0, 0], [10, 0, 0]], ["a", "b"])
    picks = _picks([[0, 0, 0], [10, 0, 0]], ["b", "b"])
    result = evaluate_distance(picks, truth, {"a": 2.0, "b": 2.0})
    assert _counts(result.pooled) == (2, 0, 0)
    assert _counts(result.per_class["a"]) == (0, 0, 1)
    assert _counts(result.per_class["b"]) == (1, 1, 0)


def test_distance_missing_radius():
    truth = ParticleTable([[0, 0, 0], [10, 0, 0]], ["a", "b"])
    with pytest.raises(SasiInputError, match=r"radii\[.*\]=R"):
        evaluate_distance(_picks([[0, 0, 0]], ["a"]), truth, {"a": 2.0})


# --- output ---------------------------------------------------------------------------------


def test_to_dict_and_table():
    result = Evaluation("distance", Scores(2, 1, 1), {"a": Scores(1, 0, 1), "b": Scores(1, 1, 0)})
    data = json.loads(json.dumps(result.to_dict()))
    assert data["rule"] == "distance"
    assert data["pooled"] == {
        "tp": 2, "fp": 1, "fn": 1,
        "precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
    }
    assert set(data["per_class"]) == {"a", "b"}
    assert data["per_class"]["b"]["precision"] == 0.5
    table = result.format_table()
    for word in ("TP", "FP", "FN", "precision", "recall", "F1", "pooled"):
        assert word in table
    pooled_row = next(line for line in table.splitlines() if line.startswith("pooled"))
    assert pooled_row.split() == ["pooled", "2", "1", "1", "0.667", "0.667", "0.667"]
    a_row = next(line for line in table.splitlines() if line.startswith("a "))
    assert a_row.split() == ["a", "1", "0", "1", "1.000", "0.500", "0.667"]


# --- CZII challenge metric (F-beta, beta 4, hit within half the radius) ---------------------

# F4 = 17 p r / (16 p + r) = 17 TP / (17 TP + 16 FN + FP)
F4_HALF_PRECISION = 17 * 0.5 * 1.0 / (16 * 0.5 + 1.0)  # p = 1/2, r = 1: 8.5 / 9


def test_fbeta_by_hand():
    s = Scores(tp=3, fp=2, fn=1)  # p = 0.6, r = 0.75
    assert s.fbeta(4) == pytest.approx(17 * 0.6 * 0.75 / (16 * 0.6 + 0.75))
    assert s.fbeta(4) == pytest.approx(51 / 69)
    assert s.fbeta(1) == s.f1 == pytest.approx(2 / 3)
    assert Scores(0, 3, 2).fbeta(4) == 0.0
    assert Scores(1, 2, 3) + Scores(4, 5, 6) == Scores(5, 7, 9)


@pytest.mark.parametrize(("offset", "tp"), [(4.9, 1), (5.0, 1), (5.1, 0)])
def test_czii_hit_within_half_the_radius(offset, tp):
    # radius 10: a pick at 0.49 r counts, at 0.51 r it is a false positive and a miss
    truth = ParticleTable([[10, 10, 10]], ["a"])
    picks = _picks([[10 + offset, 10, 10]], ["a"])
    result = evaluate_czii(picks, truth, {"a": 10.0})
    assert _counts(result.per_class["a"]) == (tp, 1 - tp, 1 - tp)
    assert result.score == float(tp)
    assert evaluate_distance(picks, truth, {"a": 10.0}).pooled.tp == 1  # the full radius


def test_czii_wrong_class_is_a_false_positive_and_a_miss():
    truth = ParticleTable([[0, 0, 0], [50, 0, 0]], ["a", "b"])
    picks = _picks([[0, 0, 0], [50, 0, 0]], ["b", "b"])
    result = evaluate_czii(picks, truth, {"a": 4.0, "b": 4.0})
    assert _counts(result.per_class["a"]) == (0, 0, 1)
    assert _counts(result.per_class["b"]) == (1, 1, 0)
    assert result.per_class["b"].fbeta(4) == pytest.approx(F4_HALF_PRECISION)
    assert result.weights == {"a": 1.0, "b": 1.0}
    assert result.score == pytest.approx((0 + F4_HALF_PRECISION) / 2)


def test_czii_weights_change_the_mean():
    truth = ParticleTable([[0, 0, 0], [50, 0, 0]], ["a", "b"])
    picks = _picks([[0, 0, 0], [50, 0, 0]], ["b", "b"])  # F4: a 0, b 8.5 / 9
    radii = {"a": 4.0, "b": 4.0}
    assert evaluate_czii(picks, truth, radii, weights={"a": 3.0}).score == pytest.approx(
        (3 * 0 + 1 * F4_HALF_PRECISION) / 4)  # b keeps its default weight 1
    assert evaluate_czii(picks, truth, radii, weights={"a": 1.0, "b": 3.0}).score == (
        pytest.approx(3 * F4_HALF_PRECISION / 4))
    unscored = evaluate_czii(picks, truth, radii, weights={"a": 0.0})
    assert unscored.score == pytest.approx(F4_HALF_PRECISION)
    assert _counts(unscored.per_class["a"]) == (0, 0, 1)  # reported, not scored
    with pytest.raises(SasiInputError, match="negative weight"):
        evaluate_czii(picks, truth, radii, weights={"a": -1.0})


def test_czii_challenge_weights_for_its_classes():
    truth = ParticleTable([[0, 0, 0], [100, 0, 0], [200, 0, 0]],
                          ["ribosome", "thyroglobulin", "beta-amylase"])
    picks = _picks([[0, 0, 0], [200, 0, 0]], ["ribosome", "beta-amylase"])
    radii = {"ribosome": 15.0, "thyroglobulin": 13.0, "beta-amylase": 6.5}
    result = evaluate_czii(picks, truth, radii)
    assert result.weights == {name: CZII_WEIGHTS[name] for name in result.per_class}
    assert result.weights == {"beta-amylase": 0.0, "ribosome": 1.0, "thyroglobulin": 2.0}
    # F4: ribosome 1 (weight 1), thyroglobulin 0 (weight 2), beta-amylase 1 (not scored)
    assert result.score == pytest.approx(1 / 3)


def test_czii_counts_are_summed_over_tomograms():
    # tomogram 1: TP 3, FP 2; tomogram 2: FN 1 -> p = 0.6, r = 0.75, F4 = 51 / 69
    truth1 = ParticleTable([[0, 0, 0], [20, 0, 0], [40, 0, 0]], ["a"] * 3)
    picks1 = _picks([[0.5, 0, 0], [20, 0.5, 0], [40, 0, 1], [60, 0, 0], [80, 0, 0]], ["a"] * 5)
    truth2 = ParticleTable([[10, 10, 10]], ["a"])
    result = evaluate_czii([picks1, ParticleTable.empty()], [truth1, truth2], {"a": 4.0})
    assert _counts(result.per_class["a"]) == (3, 2, 1)
    assert result.score == pytest.approx(51 / 69)  # not the mean of the tomograms' F4
    with pytest.raises(ValueError, match="one of each per tomogram"):
        evaluate_czii([picks1], [truth1, truth2], {"a": 4.0})


def test_czii_each_true_particle_matches_once():
    # both picks lie within 0.5 r = 2 of the one particle: one TP, one FP
    truth = ParticleTable([[0, 0, 0]], ["a"])
    result = evaluate_czii(_picks([[0.5, 0, 0], [1, 0, 0]], ["a", "a"]), truth, {"a": 4.0})
    assert _counts(result.per_class["a"]) == (1, 1, 0)
    assert result.score == pytest.approx(F4_HALF_PRECISION)


def test_czii_needs_a_radius_per_truth_class():
    truth = ParticleTable([[0, 0, 0], [10, 0, 0]], ["a", "b"])
    with pytest.raises(SasiInputError, match=r"radii\[.*\]=R"):
        evaluate_czii(_picks([[0, 0, 0]], ["a"]), truth, {"a": 2.0})


def test_czii_report_and_table():
    truth = ParticleTable([[0, 0, 0], [50, 0, 0]], ["a", "b"])
    result = evaluate_czii(_picks([[0, 0, 0], [50, 0, 0]], ["b", "b"]), truth,
                           {"a": 4.0, "b": 4.0})
    data = json.loads(json.dumps(result.to_dict()))
    assert (data["rule"], data["beta"], data["radius_fraction"]) == ("czii-fbeta", 4.0, 0.5)
    assert data["score"] == pytest.approx(F4_HALF_PRECISION / 2)
    assert data["per_class"]["b"]["fbeta"] == pytest.approx(F4_HALF_PRECISION)
    assert (data["per_class"]["b"]["tp"], data["per_class"]["b"]["weight"]) == (1, 1.0)
    table = result.format_table()
    b_row = next(line for line in table.splitlines() if line.startswith("b "))
    assert b_row.split() == ["b", "1", "1", "0", "0.500", "1.000", "0.944", "1"]
    assert table.splitlines()[-1] == "weighted F4: 0.472"


def test_sasi_evaluate_adds_the_czii_block(tmp_path: Path, capsys):
    truth, picks = tmp_path / "truth.tsv", tmp_path / "picks.tsv"
    write_particles(truth, ParticleTable([[4, 4, 4], [14, 8, 4]], ["a", "b"]))
    write_particles(picks, _picks([[4, 4, 4], [14, 8, 4]], ["b", "b"]))
    radii = ["--radius", "a=4", "--radius", "b=4"]
    assert main(["evaluate", "--picks", str(picks), "--truth", str(truth), *radii, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = evaluate_distance(_picks([[4, 4, 4], [14, 8, 4]], ["b", "b"]),
                                 ParticleTable([[4, 4, 4], [14, 8, 4]], ["a", "b"]),
                                 {"a": 4.0, "b": 4.0}).to_dict()
    assert {k: printed[k] for k in ("rule", "pooled", "per_class")} == expected
    assert printed[CZII_REPORT]["score"] == pytest.approx(F4_HALF_PRECISION / 2)
    assert main(["evaluate", "--picks", str(picks), "--truth", str(truth), *radii,
                 "--weight", "a=0"]) == 0
    text = capsys.readouterr().out
    assert "rule: distance" in text and text.rstrip().endswith("weighted F4: 0.944")
    # the SHREC rule without radii: its report alone, as before
    occupancy = tmp_path / "occupancy.mrc"
    write_volume(occupancy, _occupancy().astype(np.int16), 10.0)
    write_particles(truth, _truth())
    assert main(["evaluate", "--picks", str(picks), "--truth", str(truth), "--occupancy",
                 str(occupancy), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"rule", "pooled", "per_class"}
    # with radii, the unscored classes get weight 0 in the CZII block
    assert main(["evaluate", "--picks", str(picks), "--truth", str(truth), "--occupancy",
                 str(occupancy), *radii, "--radius", "vesicle=4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[CZII_REPORT]["per_class"]["vesicle"][
        "weight"] == 0.0
    assert main(["evaluate", "--picks", str(picks), "--truth", str(truth), *radii,
                 "--radius", "vesicle=4", "--weight", "a=-2"]) == 2
