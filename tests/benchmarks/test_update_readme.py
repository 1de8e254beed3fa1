"""benchmarks/update_readme.py renders the demo's quality table from eval.json: both evaluators side by side, the
guidance interval named, and the real-data floors of each evaluator."""

from ..conftest import load_script


def evaluation(fid: float, second: dict | None = None, interval: list[float] | None = None) -> dict:
    ev = {"fid": fid, "kid": 0.01, "precision": 0.8, "recall": 0.5, "class_consistency": 0.9, "floor_fid": 0.04,
          "floor_kid": 0.0, "floor_precision": 0.9, "floor_recall": 0.89, "floor_class_consistency": 0.918,
          "config": {"guidance_scale": 3.0, "guidance_interval": interval}}
    if second is not None:
        ev["second_evaluator"] = second
    return ev


def test_eval_row_shows_both_evaluators_and_their_floors():
    readme = load_script("benchmarks/update_readme.py")
    second = {"fid": 3.93, "kid": 0.0023, "precision": 0.572, "recall": 0.52, "class_consistency": 0.893,
              "floor_fid": 0.85, "floor_kid": 0.0, "floor_precision": 0.813, "floor_recall": 0.817,
              "floor_class_consistency": 0.902}
    ev = evaluation(0.54, second, [0.3, 5.0])
    assert readme.eval_row("x", ev) == ("| x | 0.54 / 3.93 | 0.0100 / 0.0023 | 0.800 / 0.572 | 0.500 / 0.520 | "
                                        "90.0% / 89.3% |")
    assert readme.eval_row("floor", ev, prefix="floor_").startswith("| floor | 0.04 / 0.85 | 0.0000 / 0.0000 |")
    assert readme.guidance_label(ev["config"]) == "cfg 3.0 in (0.3, 5.0]"


def test_eval_row_without_a_second_evaluator_keeps_one_number_per_cell():
    readme = load_script("benchmarks/update_readme.py")
    ev = evaluation(1.27)
    assert readme.eval_row("x", ev) == "| x | 1.27 | 0.0100 | 0.800 | 0.500 | 90.0% |"
    assert readme.guidance_label(ev["config"]) == "cfg 3.0"
