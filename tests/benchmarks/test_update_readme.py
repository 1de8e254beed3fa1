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


def demo_results(run: str, setup_seconds: float | None) -> dict:
    ev = evaluation(0.57, interval=[0.3, 5.0])
    ev.update(num_samples=5000, total_seconds=420.0)
    ev["config"].update(scheduler="dpm", num_inference_steps=25)
    return {"machine": "a test machine", "date": "2026-12-06", "run": run, "setup_seconds": setup_seconds,
            "vae": {"psnr_db": 33.8, "seconds": 440.0, "latent_shape": [4, 16, 16]},
            "cache": {"num_samples": 60000, "seconds": 50.0},
            "train": {"model": "DiffiT-S/2", "params": 19218724, "steps": 2280, "final_loss": 0.1755,
                      "seconds": 1047.0, "total_seconds": 1539.0, "objective": "flow"},
            "classifier": {"test_accuracy": 0.92, "seconds": 130.0}, "eval": ev}


def test_demo_section_names_its_run_and_adds_the_setup_to_the_chain():
    readme = load_script("benchmarks/update_readme.py")
    lines = readme.demo_section(demo_results("diffit-fmnist", 111.0)).splitlines()
    chain = lines.index("| **the demo command, end to end** | pipeline in outputs/diffit-fmnist | **25.6 min** |")
    assert lines[chain - 5] == "| setup (`bash scripts/setup.sh`) |  | 1.9 min |"
    assert lines[chain + 1] == "| **setup + the demo command** |  | **27.5 min** |"  # (111 + 1539) s
    assert "| DiffiT-S/2 (EMA), cfg 3.0 in (0.3, 5.0] | 0.57 |" in "\n".join(lines)
    without = readme.demo_section(demo_results("dit-fmnist", None))
    assert "setup" not in without and "pipeline in outputs/dit-fmnist" in without
