"""scripts/model_card_tables.py: the model card's tables are printed from evaluate's JSON files."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "model_card_tables.py"


def _sampler(fd, nfe):
    return {"sampler": "x", "steps": 500, "snr": 0.16, "eps": 1e-3, "batch_size": 2,
            "score_evaluations_per_batch": nfe, "wall_s": 12.0, "n": 4, "frechet_distance": fd,
            "frechet_distance_unclipped": fd + 1, "confident_share": 0.5, "class_histogram": [1, 1, 2] + [0] * 7}


def _write(path, **extra):
    path.write_text(json.dumps({"command": f"python -m sgm_helpers evaluate # {path.name}", "torch_threads": 1,
                                "real_data_baseline": {"n": 4, "frechet_distance": 1.5, "confident_share": 1.0,
                                                       "class_histogram": [4] + [0] * 9}, **extra}))
    return path


def _run(*paths):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, paths)], capture_output=True, text=True, timeout=60)


def test_tables_merge_the_files(tmp_path):
    a = _write(tmp_path / "a.json", bpd={"n": 10, "mean": 4.25, "stderr": 0.0123, "batch_size": 5,
                                         "nfe_per_batch_mean": 150.0, "nfe_per_batch": [140, 160], "wall_s": 3.0})
    b = _write(tmp_path / "b.json", samplers={"pc": _sampler(61.234, [1000, 1000]), "ode": _sampler(99.0, [300, 310])})
    proc = _run(a, b)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| 10 | 4.250 ± 0.012 | 150, 140-160 | 5 | 3 s (0.30 s per image, 1 CPU thread) |" in out
    assert "| predictor-corrector, 500 steps, snr = 0.16 | 4 | 61.23 | 62.23 | 50.00% | 1 1 2 0 0 0 0 0 0 0 |" in out
    assert "305 (mean of 300, 310)" in out
    assert out.index("predictor-corrector") < out.index("probability-flow ODE")   # em, pc, ode order


def test_a_result_in_two_files_is_an_error(tmp_path):
    a = _write(tmp_path / "a.json", samplers={"em": _sampler(60.0, [500])})
    b = _write(tmp_path / "b.json", samplers={"em": _sampler(61.0, [500])})
    proc = _run(a, b)
    assert proc.returncode != 0 and "sampler 'em' found twice" in proc.stderr
