import io
import subprocess
import sys

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
