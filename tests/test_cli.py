import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sgm_helpers import ScoreNet, VESDE, make_ema, save_checkpoint
from sgm_helpers.__main__ import main


def run_main(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse errors and --help
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err):
    assert code == 2
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert "Traceback" not in err


def test_python_m_bad_argument_in_a_subprocess():
    proc = subprocess.run([sys.executable, "-m", "sgm_helpers", "sample", "--sampler", "rk4"],
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr)
    assert "--sampler" in proc.stderr and "rk4" in proc.stderr


def test_help(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for name in ("sample", "train", "bpd", "evaluate"):
        assert name in out


@pytest.mark.parametrize("command", ["sample", "train", "bpd", "evaluate"])
def test_subcommand_help(command, capsys):
    code, out, _ = run_main([command, "--help"], capsys)
    assert code == 0 and f"python -m sgm_helpers {command}" in out and "--device" in out


def test_bad_arguments_give_a_one_line_error(tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    empty = tmp_path / "no_data"
    empty.mkdir()
    cases = {
        "unknown sampler": ["sample", "--sampler", "xx"],
        "n < 1": ["sample", "--n", "0"],
        "steps not an integer": ["sample", "--steps", "many"],
        "unreadable checkpoint": ["sample", "--checkpoint", garbage, "--device", "cpu"],
        "missing checkpoint": ["sample", "--checkpoint", tmp_path / "missing.pt", "--device", "cpu"],
        "not a png": ["sample", "--out", tmp_path / "x.jpg"],
        "unknown device": ["sample", "--device", "toaster"],
        "unknown model": ["sample", "--model", "mnist-ve99", "--device", "cpu"],
        "missing data offline (bpd)": ["bpd", "--data-dir", empty, "--no-download", "--device", "cpu"],
        "missing data offline (train)": ["train", "--data-dir", empty, "--no-download", "--out", tmp_path / "c.pt"],
        "negative bpd-n": ["evaluate", "--bpd-n", "-1"],
        "no subcommand": [],
    }
    for name, argv in cases.items():
        code, _, err = run_main(argv, capsys)
        assert_one_line_error(code, err)
    assert not (tmp_path / "c.pt").exists()


def test_sample_writes_a_png_grid_from_the_bundled_model(tmp_path, capsys):
    out = tmp_path / "grid" / "samples.png"
    code, stdout, _ = run_main(["sample", "--sampler", "pc", "--steps", "2", "--n", "4", "--device", "cpu",
                                "--out", out, "--no-progress"], capsys)
    assert code == 0 and f"wrote {out}" in stdout and "mnist-ve25" in stdout
    assert "4 score evaluations" in stdout  # pc: two per step
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (2 * 30 + 2, 2 * 30 + 2)  # 2 x 2 images of 28 + 2 padding


def test_sample_from_a_training_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    model = ScoreNet(VESDE(10.0).marginal_prob_std, channels=(32, 32, 32, 32), embed_dim=16)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, ema_model=make_ema(model), step=0)
    out = tmp_path / "s.png"
    code, stdout, _ = run_main(["sample", "--checkpoint", path, "--sigma", "10", "--sampler", "em", "--steps", "3",
                                "--n", "3", "--device", "cpu", "--out", out, "--no-progress"], capsys)
    assert code == 0 and out.is_file() and "VESDE(sigma=10)" in stdout and "3 score evaluations" in stdout


def _write_idx(path, array: torch.Tensor) -> None:
    # The idx format torchvision reads: a magic number (0x0803 images, 0x0801 labels), the dims, then bytes.
    magic = 0x0800 + array.dim()
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.to(torch.uint8).numpy().tobytes())


@pytest.fixture
def tiny_mnist(tmp_path):
    raw = tmp_path / "tiny" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 4), ("t10k", 2)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=gen))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(n) % 10)
    return tmp_path / "tiny"


def test_train_writes_resumes_and_refuses_other_settings(tmp_path, tiny_mnist, capsys):
    from sgm_helpers import load_checkpoint

    out = tmp_path / "ckpt.pt"
    base = ["train", "--data-dir", tiny_mnist, "--no-download", "--device", "cpu", "--no-progress", "--out", out,
            "--batch-size", "4"]
    code, stdout, _ = run_main([*base, "--epochs", "1"], capsys)
    assert code == 0 and "training on 4 MNIST training images" in stdout
    assert load_checkpoint(out)["step"] == 1                       # 4 images / batch 4
    code, stdout, _ = run_main([*base, "--epochs", "2"], capsys)
    assert code == 0 and "resuming from" in stdout and "(step 1 of 2)" in stdout
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == 2 and len(ckpt["losses"]) == 2 and ckpt["config"]["precision"] == "float32"
    code, _, err = run_main([*base, "--epochs", "3", "--precision", "bfloat16"], capsys)
    assert_one_line_error(code, err)
    assert "cannot resume" in err and "precision='float32' in the checkpoint, 'bfloat16' now" in err
    assert load_checkpoint(out)["step"] == 2


# --- VE, VP and sub-VP on the command line -------------------------------------------------------------------


def test_sample_with_another_sde_than_the_shipped_models_is_refused(tmp_path, capsys):
    out = tmp_path / "s.png"
    code, _, err = run_main(["sample", "--sde", "vp", "--model", "mnist-ve25", "--device", "cpu", "--out", out,
                             "--no-progress"], capsys)
    assert_one_line_error(code, err)
    assert "VESDE(sigma=25)" in err and "VPSDE(beta_min=0.1, beta_max=20)" in err and "mnist-ve25" in err
    assert not out.exists()


def test_sample_with_heun_reports_its_score_evaluations(tmp_path, capsys):
    out = tmp_path / "heun.png"
    code, stdout, _ = run_main(["sample", "--sampler", "heun", "--steps", "2", "--n", "2", "--device", "cpu",
                                "--out", out, "--no-progress"], capsys)
    assert code == 0 and out.is_file()
    assert "3 score evaluations" in stdout and "Heun" in stdout  # 2N - 1 for N = 2


def test_sample_with_the_ancestral_sampler(tmp_path, capsys):
    out = tmp_path / "ancestral.png"
    code, stdout, _ = run_main(["sample", "--sampler", "ancestral", "--steps", "3", "--n", "2", "--device", "cpu",
                                "--out", out, "--no-progress"], capsys)
    assert code == 0 and out.is_file() and "3 score evaluations" in stdout and "ancestral" in stdout


def test_a_vp_checkpoint_samples_with_its_sde_and_refuses_another(tmp_path, capsys):
    from sgm_helpers import VPSDE

    torch.manual_seed(0)
    model = ScoreNet(VPSDE().marginal_prob_std, channels=(32, 32, 32, 32), embed_dim=16)
    path = save_checkpoint(tmp_path / "vp.pt", model, step=0, config={"sde": VPSDE().config()})
    out = tmp_path / "vp.png"
    code, stdout, _ = run_main(["sample", "--checkpoint", path, "--sampler", "em", "--steps", "2", "--n", "2",
                                "--device", "cpu", "--out", out, "--no-progress"], capsys)
    assert code == 0 and out.is_file() and "VPSDE(beta_min=0.1, beta_max=20)" in stdout
    code, _, _ = run_main(["sample", "--checkpoint", path, "--sde", "vp", "--sampler", "em", "--steps", "2",
                           "--n", "2", "--device", "cpu", "--out", out, "--no-progress"], capsys)
    assert code == 0
    for other in (["--sde", "ve"], ["--sde", "subvp"], ["--sde", "vp", "--beta-max", "10"], ["--sigma", "25"]):
        code, _, err = run_main(["sample", "--checkpoint", path, *other, "--sampler", "em", "--steps", "2", "--n", "2",
                                 "--device", "cpu", "--out", tmp_path / "no.png", "--no-progress"], capsys)
        assert_one_line_error(code, err)
        assert "VPSDE(beta_min=0.1, beta_max=20)" in err and "trained with" in err, err
    assert not (tmp_path / "no.png").exists()


def test_train_vp_with_likelihood_weighting_records_it(tmp_path, tiny_mnist, capsys):
    from sgm_helpers import VPSDE, load_checkpoint, load_score_checkpoint

    out = tmp_path / "vp.pt"
    code, stdout, _ = run_main(["train", "--data-dir", tiny_mnist, "--no-download", "--device", "cpu", "--no-progress",
                                "--out", out, "--batch-size", "4", "--epochs", "1", "--sde", "vp",
                                "--likelihood-weighting", "--importance-sampling", "--dequantize"], capsys)
    assert code == 0 and "VPSDE(beta_min=0.1, beta_max=20)" in stdout
    config = load_checkpoint(out)["config"]
    assert config["sde"] == VPSDE().config() == {"name": "VPSDE", "beta_min": 0.1, "beta_max": 20.0}
    assert config["likelihood_weighting"] and config["importance_sampling"] and config["dequantize"]
    assert load_score_checkpoint(out, device="cpu")[1] == VPSDE()
    # resuming the same file without --likelihood-weighting is refused, naming the setting
    code, _, err = run_main(["train", "--data-dir", tiny_mnist, "--no-download", "--device", "cpu", "--no-progress",
                             "--out", out, "--batch-size", "4", "--epochs", "2", "--sde", "vp", "--dequantize"], capsys)
    assert_one_line_error(code, err)
    assert "likelihood_weighting=True in the checkpoint, False now" in err


def test_importance_sampling_without_likelihood_weighting_on_the_command_line(tmp_path, tiny_mnist, capsys):
    out = tmp_path / "c.pt"
    code, _, err = run_main(["train", "--data-dir", tiny_mnist, "--no-download", "--device", "cpu", "--no-progress",
                             "--out", out, "--batch-size", "4", "--epochs", "1", "--importance-sampling"], capsys)
    assert_one_line_error(code, err)
    assert "importance_sampling" in err and not out.exists()


# --- --checkpoint: a path (``~`` expanded) or ``-`` for standard input ----------------------------------------


def _stdin_from(monkeypatch, data: bytes, tty: bool = False):
    stream = io.TextIOWrapper(io.BytesIO(data))
    if tty:
        stream.isatty = lambda: True
    monkeypatch.setattr(sys, "stdin", stream)


def _sample_argv(checkpoint, out):
    return ["sample", "--checkpoint", checkpoint, "--sigma", "10", "--sampler", "em", "--steps", "2", "--n", "2",
            "--device", "cpu", "--out", out, "--no-progress"]


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = ScoreNet(VESDE(10.0).marginal_prob_std, channels=(32, 32, 32, 32), embed_dim=16)
    return save_checkpoint(tmp_path / "ckpt.pt", model, ema_model=make_ema(model), step=0)


def test_checkpoint_from_standard_input_gives_the_same_samples_as_the_file(tmp_path, tiny_checkpoint, capsys,
                                                                          monkeypatch):
    code, _, _ = run_main(_sample_argv(tiny_checkpoint, tmp_path / "file.png"), capsys)
    assert code == 0
    _stdin_from(monkeypatch, tiny_checkpoint.read_bytes())
    code, stdout, _ = run_main(_sample_argv("-", tmp_path / "stdin.png"), capsys)
    assert code == 0 and "from standard input (ema weights, VESDE(sigma=10))" in stdout
    assert (tmp_path / "stdin.png").read_bytes() == (tmp_path / "file.png").read_bytes()


def test_checkpoint_path_with_a_tilde(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    code, stdout, _ = run_main(_sample_argv("~/ckpt.pt", tmp_path / "s.png"), capsys)
    assert code == 0 and str(tiny_checkpoint) in stdout


def test_checkpoint_errors_name_the_argument(tmp_path, capsys, monkeypatch):
    for where, expected in ((tmp_path / "missing.pt", "no such file"), (tmp_path, "not a file")):
        code, _, err = run_main(_sample_argv(where, tmp_path / "s.png"), capsys)
        assert_one_line_error(code, err)
        assert "--checkpoint" in err and expected in err and str(where) in err
    for data, tty, expected in ((b"", False, "standard input is empty"), (b"", True, "is a terminal"),
                                (b"not a checkpoint", False, "cannot read checkpoint <stdin>")):
        _stdin_from(monkeypatch, data, tty)
        code, _, err = run_main(_sample_argv("-", tmp_path / "s.png"), capsys)
        assert_one_line_error(code, err)
        assert expected in err and ("--checkpoint" in err or "<stdin>" in err)
    assert not (tmp_path / "s.png").exists()


# --- controllable generation: sample --class with classifier guidance or cfg, and inpaint -----------------------


def _labelled_checkpoint(path, model, objective):
    """A checkpoint as train() writes it (SDE, architecture, objective recorded), after one step on random digits."""
    from sgm_helpers import train

    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    train(model, (images, torch.arange(4)), VESDE(10.0), steps=1, batch_size=4, checkpoint_path=path, progress=False,
          objective=objective, **({"p_uncond": 0.1} if objective == "conditional_dsm" else {}))
    return path


@pytest.fixture
def conditional_checkpoint(tmp_path):
    from sgm_helpers import ConditionalScoreNet

    torch.manual_seed(0)
    model = ConditionalScoreNet(VESDE(10.0).marginal_prob_std, channels=(32, 32, 32, 32), embed_dim=16)
    torch.nn.init.normal_(model.label_embed.weight)      # (it starts at zero): the label changes the score
    return _labelled_checkpoint(tmp_path / "conditional.pt", model, "conditional_dsm")


@pytest.fixture
def classifier_checkpoint(tmp_path):
    from sgm_helpers import TimeClassifier

    torch.manual_seed(0)
    return _labelled_checkpoint(tmp_path / "classifier.pt", TimeClassifier(channels=(32, 32, 32), embed_dim=16),
                                "time_classifier")


def _guided(out, digit, scale, *extra):
    return ["sample", "--class", digit, "--scale", scale, "--sampler", "em", "--steps", "2", "--n", "2",
            "--device", "cpu", "--out", out, "--no-progress", *extra]


def test_sample_a_class_with_classifier_free_guidance(tmp_path, conditional_checkpoint, capsys):
    files = {}
    for digit, scale in ((3, 2), (5, 2), (3, 0), (5, 0)):
        files[digit, scale] = out = tmp_path / f"cfg-{digit}-{scale}.png"
        code, stdout, _ = run_main(_guided(out, digit, scale, "--guidance", "cfg", "--checkpoint",
                                           conditional_checkpoint), capsys)
        assert code == 0 and out.is_file(), stdout
        assert f"classifier-free guidance towards class {digit}, w = {scale}" in stdout
        assert "VESDE(sigma=10)" in stdout and "2 score evaluations" in stdout   # w = 2: both scores in one call
    # w = 0 is the unconditional model: the class does not matter; w = 2 follows the label
    assert files[3, 0].read_bytes() == files[5, 0].read_bytes()
    assert files[3, 2].read_bytes() != files[5, 2].read_bytes()


def test_without_scale_each_guidance_uses_its_measured_default(tmp_path, tiny_checkpoint, conditional_checkpoint,
                                                              classifier_checkpoint, capsys):
    from sgm_helpers.controllable import DEFAULT_SCALES

    common = ["sample", "--class", "3", "--sampler", "em", "--steps", "2", "--n", "2", "--device", "cpu",
              "--no-progress", "--out"]
    code, stdout, _ = run_main([*common, tmp_path / "cfg.png", "--guidance", "cfg", "--checkpoint",
                                conditional_checkpoint], capsys)
    assert code == 0 and f"w = {DEFAULT_SCALES['cfg']:g}" in stdout
    code, stdout, _ = run_main([*common, tmp_path / "cg.png", "--checkpoint", tiny_checkpoint, "--sigma", "10",
                                "--classifier-checkpoint", classifier_checkpoint], capsys)
    assert code == 0 and f"scale {DEFAULT_SCALES['classifier']:g}" in stdout


def test_sample_a_class_with_classifier_guidance(tmp_path, tiny_checkpoint, classifier_checkpoint, capsys):
    files = {}
    for digit, scale in ((3, 50), (5, 50), (3, 0), (5, 0)):
        files[digit, scale] = out = tmp_path / f"cg-{digit}-{scale}.png"
        code, stdout, _ = run_main(_guided(out, digit, scale, "--checkpoint", tiny_checkpoint, "--sigma", "10",
                                           "--classifier-checkpoint", classifier_checkpoint), capsys)
        assert code == 0 and out.is_file(), stdout
        assert f"guided towards class {digit} by {classifier_checkpoint}" in stdout and f"scale {scale}" in stdout
    assert files[3, 0].read_bytes() == files[5, 0].read_bytes()          # scale 0: the unconditional samples
    assert files[3, 50].read_bytes() != files[5, 50].read_bytes()


def test_guidance_with_the_wrong_network_or_sde_is_refused(tmp_path, tiny_checkpoint, conditional_checkpoint,
                                                           classifier_checkpoint, capsys):
    from sgm_helpers import TimeClassifier

    torch.manual_seed(0)
    other_sde = _labelled_checkpoint(tmp_path / "ve25.pt", TimeClassifier(channels=(32, 32, 32), embed_dim=16),
                                     "time_classifier")
    ckpt = torch.load(other_sde, weights_only=True)
    ckpt["config"]["sde"] = VESDE(25.0).config()
    torch.save(ckpt, other_sde)
    score = _labelled_checkpoint(tmp_path / "score.pt", ScoreNet(VESDE(10.0).marginal_prob_std,
                                                                 channels=(32, 32, 32, 32), embed_dim=16), "dsm")
    out = tmp_path / "no.png"
    cases = {
        "a classifier as the cfg model": (["--guidance", "cfg", "--checkpoint", classifier_checkpoint],
                                          "holds a noise-conditional classifier"),
        "a conditional model as the guided score model": (
            ["--checkpoint", conditional_checkpoint, "--classifier-checkpoint", classifier_checkpoint],
            "holds a class-conditional score model"),
        "a score model as the classifier": (["--checkpoint", score, "--classifier-checkpoint", score],
                                            "--classifier-checkpoint .* holds an unconditional score model .* this "
                                            "needs a noise-conditional classifier"),
        # a checkpoint that records no objective (not written by train) is taken at its word, and fails in the call
        "an unrecorded score model as the classifier": (["--checkpoint", tiny_checkpoint, "--sigma", "10",
                                                         "--classifier-checkpoint", tiny_checkpoint],
                                                        r"classifier must return logits \[B, num_classes\]"),
        "a classifier of another SDE": (["--checkpoint", tiny_checkpoint, "--sigma", "10", "--classifier-checkpoint",
                                         other_sde], r"VESDE\(sigma=25\).*VESDE\(sigma=10\)"),
        "a classifier checkpoint with cfg": (["--guidance", "cfg", "--checkpoint", conditional_checkpoint,
                                              "--classifier-checkpoint", classifier_checkpoint],
                                             "--classifier-checkpoint is for --guidance classifier"),
        "a score model by name for cfg": (["--guidance", "cfg", "--model", "mnist-ve25"],
                                          "mnist-ve25 is a score_model, not a class-conditional score model"),
    }
    for name, (extra, match) in cases.items():
        code, _, err = run_main(_guided(out, 3, 1, *extra), capsys)
        assert_one_line_error(code, err)
        assert re.search(match, err), (name, err)
    assert not out.exists()


def test_a_missing_shipped_model_says_how_to_train_it(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    from sgm_helpers import pretrained

    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "no-weights")   # an installation without them
    out = tmp_path / "no.png"
    code, _, err = run_main(_guided(out, 3, 1, "--guidance", "cfg"), capsys)
    assert_one_line_error(code, err)
    assert ("'mnist-conditional'" in err and "python scripts/train_pretrained.py --model conditional" in err
            and "--checkpoint" in err)
    code, _, err = run_main(_guided(out, 3, 1, "--checkpoint", tiny_checkpoint, "--sigma", "10"), capsys)
    assert_one_line_error(code, err)
    assert ("'mnist-time-classifier'" in err and "python scripts/train_pretrained.py --model time-classifier" in err
            and "--classifier-checkpoint" in err)
    assert not out.exists()


def test_bad_guidance_arguments_give_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "no.png"
    cases = {
        "class 10": (["sample", "--class", "10"], "--class: must be a digit class 0-9, got '10'"),
        "class -1": (["sample", "--class", "-1"], "--class: must be a digit class 0-9"),
        "class three": (["sample", "--class", "three"], "--class: must be a digit class 0-9"),
        "negative scale": (["sample", "--class", "3", "--scale", "-0.5"], "--scale: must be a finite number >= 0"),
        "infinite scale": (["sample", "--class", "3", "--scale", "inf"], "--scale: must be a finite number >= 0"),
        "unknown guidance": (["sample", "--class", "3", "--guidance", "clip"], "--guidance"),
        "scale without a class": (["sample", "--scale", "2", "--device", "cpu"], "--scale .* --class K"),
        "guidance without a class": (["sample", "--guidance", "cfg", "--device", "cpu"], "--guidance .* --class K"),
    }
    for name, (argv, match) in cases.items():
        code, _, err = run_main([*argv, "--out", out], capsys)
        assert_one_line_error(code, err)
        assert re.search(match, err), (name, err)
    assert not out.exists()


def test_inpaint_help(capsys):
    code, out, _ = run_main(["inpaint", "--help"], capsys)
    assert code == 0 and "python -m sgm_helpers inpaint" in out and "--resamplings" in out and "--mask" in out
    assert "--reconstruction-guidance" in out and "--corrector" in out


def _grid_cells(path, rows, cols):
    """The 28x28 cells of a save_image_grid PNG (2-pixel padding), as uint8 tensors [rows, cols, 28, 28]."""
    with Image.open(path) as img:
        assert img.size == (cols * 30 + 2, rows * 30 + 2)
        pixels = torch.from_numpy(np.array(img.convert("L")))
    return torch.stack([torch.stack([pixels[2 + 30 * r:30 + 30 * r, 2 + 30 * c:30 + 30 * c] for c in range(cols)])
                        for r in range(rows)])


@pytest.mark.parametrize("mask, extra, unknown", [
    ("bottom", [], (slice(14, 28), slice(None))),
    ("right", [], (slice(None), slice(14, 28))),
    ("square", ["--square-size", "6", "--square-at", "3", "20"], (slice(3, 9), slice(20, 26))),
])
def test_inpaint_keeps_the_known_pixels_of_test_digits(tmp_path, tiny_mnist, tiny_checkpoint, capsys, mask, extra,
                                                       unknown):
    out = tmp_path / "inpaint.png"
    code, stdout, _ = run_main(["inpaint", "--data-dir", tiny_mnist, "--no-download", "--index", "1", "0",
                                "--checkpoint", tiny_checkpoint, "--sigma", "10", "--mask", mask, *extra,
                                "--steps", "2", "--resamplings", "2", "--corrector", "--reconstruction-guidance", "1",
                                "--device", "cpu", "--out", out, "--no-progress"], capsys)
    assert code == 0 and f"wrote {out}" in stdout and "MNIST test digits 1 0" in stdout
    assert "2 steps x 2 resampling(s), reconstruction guidance 1" in stdout
    assert "8 score evaluations" in stdout   # corrector + predictor
    original, masked, completion = _grid_cells(out, rows=3, cols=2)
    known = torch.ones(28, 28, dtype=torch.bool)
    known[unknown] = False
    assert torch.equal(completion[:, known], original[:, known])        # the known pixels, exactly
    assert torch.equal(masked[:, known], original[:, known])
    assert (masked[:, ~known] == 128).all()                               # the region to fill in, gray
    assert not torch.equal(completion[:, ~known], original[:, ~known])


def test_inpaint_an_image_file(tmp_path, tiny_checkpoint, capsys):
    image = tmp_path / "digit.png"
    Image.fromarray((torch.rand(56, 56, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()).save(image)
    out = tmp_path / "inpaint.png"
    code, stdout, _ = run_main(["inpaint", "--image", image, "--invert", "--checkpoint", tiny_checkpoint, "--sigma",
                                "10", "--mask", "left", "--steps", "2", "--reconstruction-guidance", "0", "--device",
                                "cpu", "--out", out, "--no-progress"], capsys)
    assert code == 0 and "(inverted), resized from 56x56" in stdout
    assert "2 steps x 2 resampling(s), reconstruction guidance 0," in stdout and "4 score evaluations" in stdout
    assert _grid_cells(out, rows=3, cols=1).shape == (3, 1, 28, 28)


def test_bad_inpaint_arguments_give_a_one_line_error(tmp_path, tiny_mnist, tiny_checkpoint, capsys):
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("a digit")
    base = ["inpaint", "--data-dir", tiny_mnist, "--no-download", "--checkpoint", tiny_checkpoint, "--sigma", "10",
            "--steps", "2", "--device", "cpu", "--no-progress", "--out", tmp_path / "no.png"]
    cases = {
        "index past the split": (["--index", "2"], "--index 2 is past the MNIST test split"),
        "negative index": (["--index", "-1"], "--index"),
        "index and image": (["--index", "0", "--image", not_an_image], "not allowed with argument"),
        "not an image": (["--image", not_an_image], "not an image file"),
        "missing image": (["--image", tmp_path / "missing.png"], "no such file"),
        "unknown mask": (["--mask", "diagonal"], "--mask"),
        "square outside": (["--mask", "square", "--square-size", "10", "--square-at", "20", "0"],
                           r"--square-at = \(20, 0\) with --square-size = 10 leaves the 28x28 image"),
        "square too big": (["--mask", "square", "--square-size", "28"], "--square-size must be below 28"),
        "square options without a square": (["--square-size", "4"], "--square-size and --square-at place --mask"),
        "zero resamplings": (["--resamplings", "0"], "--resamplings"),
        "negative guidance": (["--reconstruction-guidance", "-1"], "--reconstruction-guidance"),
        "invert without an image": (["--invert"], "--invert is for --image"),
        "not a png": (["--out", tmp_path / "x.jpg"], "--out must be a .png"),
    }
    for name, (extra, match) in cases.items():
        code, _, err = run_main([*base, *extra], capsys)
        assert_one_line_error(code, err)
        assert re.search(match, err), (name, err)
    assert not (tmp_path / "no.png").exists()


# --- scripts/train_pretrained.py --model: every network of its table ---------------------------------------------


def _script(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _training_script():
    return _script("train_pretrained")


def test_every_network_of_the_training_script_rebuilds_from_its_architecture():
    from sgm_helpers.pretrained import build_model

    script = _training_script()
    assert script.parse_args([]).model == "scorenet" and script.parse_args([]).p_uncond == 0.0
    assert script.parse_args([]).channels == [32, 64, 128, 256]
    for name, network in script.NETWORKS.items():
        args = script.parse_args(["--model", name])
        assert args.p_uncond == (0.1 if network.objective == "conditional_dsm" else 0.0)
        for time_input in ("t", "log_std") if network.objective != "time_classifier" else ("t",):
            model = network.build(VESDE(25.0), args.channels, time_input)
            rebuilt = build_model(model.architecture, VESDE(25.0))           # what the manifest and checkpoints hold
            assert type(rebuilt) is type(model) and rebuilt.architecture == model.architecture
            assert getattr(rebuilt, "time_input", "t") == time_input
            shapes = {k: v.shape for k, v in model.state_dict().items()}
            assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


@pytest.mark.parametrize("argv, match", [
    (["--model", "scorenet", "--p-uncond", "0.2"], "--p-uncond is for a class-conditional --model"),
    (["--model", "conditional", "--p-uncond", "1.5"], r"--p-uncond must be a probability in \[0, 1\]"),
    (["--model", "time-classifier", "--dequantize"], "--dequantize is for score models"),
    (["--model", "time-classifier", "--likelihood-weighting"], "--likelihood-weighting is for score models"),
    (["--model", "resnet"], "invalid choice: 'resnet'"),
    (["--model", "time-classifier", "--time-input", "log_std"], "--time-input is for score models"),
    (["--time-input", "sigma"], "invalid choice: 'sigma'"),
    (["--eps", "0"], r"--eps must be a time in the open interval \(0, 1\), got 0.0"),
])
def test_the_training_script_refuses_settings_that_do_not_fit_the_model(argv, match, capsys):
    with pytest.raises(SystemExit):
        _training_script().parse_args(argv)
    assert re.search(match, capsys.readouterr().err)


def test_the_training_script_trains_and_evaluates_a_time_classifier(tmp_path, tiny_mnist, monkeypatch, capsys):
    monkeypatch.setenv("SGM_DATA_DIR", str(tiny_mnist))
    script = _training_script()
    out, export = tmp_path / "clf.pt", tmp_path / "clf-export.pt"
    script.main(["--model", "time-classifier", "--out", str(out), "--epochs", "1", "--batch-size", "2",
                 "--channels", "32", "32", "32", "--holdout", "2", "--eval-holdout", "2", "--device", "cpu",
                 "--export", str(export)])
    printed = capsys.readouterr().out
    assert "TimeClassifier, objective time_classifier" in printed and "held-out accuracy on noised images" in printed
    info = torch.load(export, weights_only=False)["info"]            # ours; "info" holds a TorchVersion
    assert info["kind"] == "time_classifier" and info["objective"] == "time_classifier"
    assert info["architecture"] == {"class": "TimeClassifier", "channels": [32, 32, 32], "embed_dim": 128,
                                    "num_classes": 10}
    accuracy = info["holdout_accuracy"]
    assert accuracy["n"] == 2 and "holdout_bpd" not in info
    for which in ("raw", "ema"):
        assert set(accuracy[which]["accuracy"]) == {"t~U(eps,1)", *(f"t={t:g}" for t in script.EVAL_TIMES)}
        assert all(v in (0.0, 0.5, 1.0) for v in accuracy[which]["accuracy"].values())   # 2 images
    config = torch.load(out, weights_only=True)["config"]
    assert config["objective"] == "time_classifier" and config["n_train"] == 2
    record = _script("export_pretrained").run_record(export)   # what the manifest will record of this run
    assert record["command"].startswith("SGM_DATA_DIR=../shared/data python scripts/train_pretrained.py --model "
                                        "time-classifier")
    assert record["holdout_accuracy"] == accuracy and isinstance(record["torch"], str) and record["steps_per_s"] > 0
    assert record["train_seconds_total"] > 0
    json.dumps(record)
    # run again on the finished checkpoint (to re-evaluate): nothing trains, and the record says so
    script.main(["--model", "time-classifier", "--out", str(out), "--epochs", "1", "--batch-size", "2",
                 "--channels", "32", "32", "32", "--holdout", "2", "--device", "cpu", "--export", str(export)])
    again = torch.load(export, weights_only=False)["info"]
    assert again["steps_this_run"] == 0 and again["steps_per_s"] is None
    assert again["train_seconds_total"] == record["train_seconds_total"]
    assert again["final_loss_last500_mean"] == info["final_loss_last500_mean"] > 0
    rerun = _script("export_pretrained").run_record(export)
    assert "wall_s_this_run" not in rerun and "steps_per_s" not in rerun
    assert rerun["train_seconds_total"] == record["train_seconds_total"]


def test_export_records_the_checkpoints_training_time_without_a_run_info_file(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv("SGM_DATA_DIR", str(tiny_mnist))
    out = tmp_path / "ve.pt"
    _training_script().main(["--out", str(out), "--channels", "32", "32", "32", "32", "--batch-size", "2",
                             "--device", "cpu", "--epochs", "1"])
    export = _script("export_pretrained")
    entries = {}
    monkeypatch.setattr(export, "WEIGHTS_DIR", tmp_path / "weights")       # not the package's own weights
    monkeypatch.setattr(export, "write_manifest_entry", lambda name, entry: entries.setdefault(name, entry))
    monkeypatch.setattr(sys, "argv", ["export_pretrained.py", "--checkpoint", str(out), "--which", "ema",
                                      "--name", "tiny"])
    export.main()
    training, ckpt = entries["tiny"]["training"], torch.load(out, weights_only=True)
    assert training["train_seconds_total"] == ckpt["train_seconds"] > 0
    assert training["steps_per_s"] == pytest.approx(ckpt["step"] / ckpt["train_seconds"])
    assert (tmp_path / "weights" / "tiny.pt").is_file()


def test_the_training_script_records_held_out_bits_per_dim_per_image_in_its_info_json(tmp_path, tiny_mnist,
                                                                                      monkeypatch, capsys):
    monkeypatch.setenv("SGM_DATA_DIR", str(tiny_mnist))
    script = _training_script()
    export, record = tmp_path / "vp-export.pt", tmp_path / "docs" / "vp.json"
    script.main(["--out", str(tmp_path / "vp.pt"), "--sde", "vp", "--likelihood-weighting", "--importance-sampling",
                 "--dequantize", "--channels", "32", "32", "32", "32", "--batch-size", "2", "--epochs", "1",
                 "--holdout", "2", "--eval-holdout", "2", "--device", "cpu", "--export", str(export),
                 "--info-json", str(record), "--eps", "1e-3"])
    assert f"wrote the run's record to {record}" in capsys.readouterr().out
    saved = json.loads(record.read_text())
    assert saved["sde"]["name"] == "VPSDE" and saved["likelihood_weighting"] and saved["importance_sampling"]
    # --eps is the loss's smallest t (the checkpoint's resume key) and where the held-out density is scored
    assert torch.load(tmp_path / "vp.pt", weights_only=True)["config"]["eps"] == 1e-3
    assert saved["eps"] == 1e-3 and saved["holdout_bpd"]["eps"] == 1e-3
    assert saved["command"].endswith(f"--info-json {record} --eps 1e-3") and saved["holdout_bpd"]["n"] == 2
    for which in ("raw", "ema"):   # per image, so that two runs compare image by image; their mean is the summary
        values = saved["holdout_bpd_per_image"][which]
        assert len(values) == 2 and abs(sum(values) / 2 - saved["holdout_bpd"][which]["mean"]) < 1e-5
        assert "per_image" not in saved["holdout_bpd"][which]
    info = torch.load(export, weights_only=False)["info"]   # the export (and so the manifest) keeps the summary only
    assert "holdout_bpd_per_image" not in info and info["holdout_bpd"] == saved["holdout_bpd"]


def test_init_from_starts_a_conditional_model_as_the_score_model_it_came_from(tmp_path, tiny_mnist, monkeypatch,
                                                                               capsys):
    from sgm_helpers.pretrained import checkpoint_model, read_checkpoint, sha256_file

    monkeypatch.setenv("SGM_DATA_DIR", str(tiny_mnist))
    script = _training_script()
    small = ["--channels", "32", "32", "32", "32", "--batch-size", "2", "--device", "cpu", "--epochs", "1"]
    plain = tmp_path / "plain.pt"
    script.main(["--out", str(plain), "--sigma", "10", *small])
    source = checkpoint_model(read_checkpoint(plain), VESDE(10.0), "ema").eval()
    start = script.NETWORKS["conditional"].build(VESDE(10.0), [32] * 4).eval()
    assert script.init_weights(start, str(plain), VESDE(10.0)) == sha256_file(plain)
    x, t = torch.rand(3, 1, 28, 28), torch.tensor([0.1, 0.5, 0.9])
    with torch.no_grad():
        for y in (None, torch.tensor([0, 4, 9])):   # zero label embedding: the source model for every label
            torch.testing.assert_close(start(x, t, y), source(x, t), rtol=0, atol=0)
    with pytest.raises(SystemExit, match="trained with VESDE"):
        script.init_weights(start, str(plain), VESDE(25.0))
    with pytest.raises(SystemExit, match="neither a file nor a bundled model"):
        script.init_weights(start, "mnist-nothing", VESDE(10.0))
    with pytest.raises(SystemExit, match="does not fit"):
        script.init_weights(script.NETWORKS["time-classifier"].build(VESDE(10.0), [32] * 3), str(plain), VESDE(10.0))
    export = tmp_path / "cond-export.pt"                                  # the run records where it started
    script.main(["--model", "conditional", "--init-from", str(plain), "--out", str(tmp_path / "cond.pt"),
                 "--sigma", "10", *small, "--export", str(export)])
    info = torch.load(export, weights_only=False)["info"]
    assert info["init_from"] == str(plain) and info["init_from_sha256"] == sha256_file(plain)


def test_network_sde_makes_a_vp_model_from_a_ve_run_through_the_noise_level(tmp_path, tiny_mnist, monkeypatch):
    from sgm_helpers import ReparameterizedScoreNet, make_sde
    from sgm_helpers.pretrained import checkpoint_model, load_score_checkpoint, read_checkpoint

    monkeypatch.setenv("SGM_DATA_DIR", str(tiny_mnist))
    script = _training_script()
    small = ["--channels", "32", "32", "32", "32", "--batch-size", "2", "--device", "cpu", "--epochs", "1"]
    plain = tmp_path / "ve.pt"
    script.main(["--out", str(plain), "--sigma", "10", *small])
    ve, vp = VESDE(10.0), make_sde("vp", beta_min=0.1, beta_max=5.0)
    source = checkpoint_model(read_checkpoint(plain), ve, "ema").eval()
    start = ReparameterizedScoreNet(vp, ve, channels=(32, 32, 32, 32))
    script.init_weights(start, str(plain), vp)            # the network's SDE, not the model's, must match the source
    x, t = torch.rand(3, 1, 28, 28), torch.tensor([1e-3, 0.5, 1.0])
    alpha = vp.mean_coeff(t)[:, None, None, None]
    with torch.no_grad():
        torch.testing.assert_close(start(x, t), source(x / alpha, start.source_time(t)[0]) / alpha, rtol=1e-3,
                                   atol=1e-3)   # x / alpha against x * (1 / alpha) in float32
    with pytest.raises(SystemExit, match="trained with VESDE.sigma=10.*network uses VESDE.sigma=25"):
        script.init_weights(ReparameterizedScoreNet(vp, VESDE(25.0), channels=(32, 32, 32, 32)), str(plain), vp)
    out = tmp_path / "vp.pt"
    script.main(["--out", str(out), "--sde", "vp", "--beta-max", "5", "--network-sde", "ve", "--sigma", "10",
                 "--init-from", str(plain), "--likelihood-weighting", "--importance-sampling", *small])
    model, sde = load_score_checkpoint(out)              # rebuilt from the checkpoint's record alone
    assert isinstance(model, ReparameterizedScoreNet) and sde == vp and model.source_sde == ve
    with pytest.raises(SystemExit):
        script.parse_args(["--model", "conditional", "--sde", "vp", "--network-sde", "ve"])


def test_network_sde_makes_a_vp_model_from_a_ve_unet_run(tmp_path, tiny_mnist, monkeypatch):
    from sgm_helpers import ReparameterizedUNet, make_sde
    from sgm_helpers.pretrained import checkpoint_model, load_score_checkpoint, read_checkpoint

    monkeypatch.setenv("SGM_DATA_DIR", str(tiny_mnist))
    script = _training_script()
    small = ["--model", "unet", "--channels", "8", "16", "--time-input", "log_std", "--batch-size", "2", "--device",
             "cpu", "--epochs", "1"]
    plain, out = tmp_path / "ve.pt", tmp_path / "vp.pt"
    script.main(["--out", str(plain), *small])
    script.main(["--out", str(out), "--sde", "vp", "--beta-max", "9.07", "--network-sde", "ve", "--init-from",
                 str(plain), "--likelihood-weighting", "--importance-sampling", "--dequantize", *small])
    model, sde = load_score_checkpoint(out)              # rebuilt from the checkpoint's record alone
    assert isinstance(model, ReparameterizedUNet) and sde == make_sde("vp", beta_max=9.07)
    assert model.source_sde == VESDE(25.0) and model.time_input == "log_std" and model.channels == (8, 16)
    start = ReparameterizedUNet(sde, VESDE(25.0), channels=(8, 16), time_input="log_std")
    script.init_weights(start, str(plain), sde)
    source = checkpoint_model(read_checkpoint(plain), VESDE(25.0), "ema").eval()
    x, t = torch.rand(3, 1, 28, 28), torch.tensor([1e-3, 0.5, 1.0])
    alpha = sde.mean_coeff(t)[:, None, None, None]
    with torch.no_grad():
        torch.testing.assert_close(start(x, t), source(x / alpha, start.source_time(t)[0]) / alpha, rtol=1e-3,
                                   atol=1e-3)


def test_compare_ema_raw_scores_both_weights_on_held_out_training_images(tmp_path, tiny_mnist, tiny_checkpoint,
                                                                          monkeypatch, capsys):
    monkeypatch.setenv("SGM_DATA_DIR", str(tiny_mnist))
    script = _script("compare_ema_raw")
    monkeypatch.setattr(sys, "argv", ["compare_ema_raw.py", "--checkpoint", str(tiny_checkpoint), "--sigma", "10",
                                      "--holdout", "2", "--dsm-n", "2", "--bpd-n", "1"])
    script.main()
    out = capsys.readouterr().out
    assert "VESDE(sigma=10); held-out = training images 3-4" in out        # the last 2 of 4, never the test split
    assert out.count("DSM loss") == 2 and "raw:" in out and "ema:" in out
    monkeypatch.setattr(sys, "argv", ["compare_ema_raw.py", "--checkpoint", str(tiny_checkpoint), "--holdout", "2",
                                      "--dsm-n", "3"])
    with pytest.raises(SystemExit, match="--dsm-n and --bpd-n must be in 1..--holdout"):
        script.main()


def test_likelihood_outliers_rescores_the_worst_and_the_median_image_alone(tmp_path, tiny_mnist, capsys, monkeypatch):
    script = _script("likelihood_outliers")
    results = tmp_path / "bpd.json"
    results.write_text(json.dumps({"bpd": {"start": 1, "per_image": [5.0, 1.0, 3.0]}}))
    script.main(["--results", str(results), "--holdout", "4", "--data-dir", str(tiny_mnist), "--worst", "1",
                 "--draws", "2", "--probes", "1"])
    out = capsys.readouterr().out
    assert "3 images, mean 3.000, median 3.000, worst 5.000 bits/dim, 0 above 8" in out
    assert "VESDE(sigma=25)" in out   # the shipped model
    lines = [line for line in out.splitlines() if line.startswith("image ")]
    assert [line.split(":")[0] for line in lines] == [     # the worst (index 1 of the split), then the median
        "image 1 (worst, batched 5.000), dequantization 0", "image 1 (worst, batched 5.000), dequantization 1",
        "image 3 (median, batched 3.000), dequantization 0", "image 3 (median, batched 3.000), dequantization 1"]
    assert all(float(line.split("max |x(1)| ")[1]) > 0 for line in lines)
    with pytest.raises(SystemExit, match="holds 3 images from index 1, but the split has 1 there"):
        script.main(["--results", str(results), "--holdout", "0", "--data-dir", str(tiny_mnist)])
    with pytest.raises(SystemExit, match="--draws must be at least 1"):
        script.main(["--results", str(results), "--draws", "0"])
    # results scored at another t = eps (evaluate --bpd-eps) are re-scored at that eps
    seen, ode_likelihood = [], script.ode_likelihood
    monkeypatch.setattr(script, "ode_likelihood", lambda *a, **k: seen.append(k["eps"]) or ode_likelihood(*a, **k))
    results.write_text(json.dumps({"bpd": {"start": 1, "per_image": [5.0, 1.0, 3.0], "eps": 1e-3}}))
    script.main(["--results", str(results), "--holdout", "4", "--data-dir", str(tiny_mnist), "--worst", "1",
                 "--draws", "1", "--probes", "1"])
    assert seen == [1e-3, 1e-3]   # the worst image and the median one
