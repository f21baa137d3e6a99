"""xmod-train / xmod-eval as a user types them: help, typos, bad values, run directories of failed runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xmod_lab import run_dir

BIN = Path(sys.executable).parent


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**environ, "XMOD_CACHE": str(cwd / "cache"), **(env or {})})


@pytest.mark.parametrize("command", ["xmod-train", "xmod-eval"])
def test_help_describes_the_command_and_points_to_the_others(tmp_path, command):
    out = cli(command, "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "is powered by Hydra" not in text
    assert text.startswith(f"{command}: ") and "Common commands:" in text
    others = {"xmod-train", "xmod-eval", "xmod-report"} - {command}
    assert all(f"{other} --help" in text for other in others)
    assert "freeze: adapters_only, auto, custom, head_only, none, paper" in text  # the groups and their options
    assert not (tmp_path / "outputs").exists()


def test_help_and_config_errors_never_import_torch(tmp_path):
    """What makes them answer in a second: nothing past Hydra is imported until a config composed."""
    code = (
        "import sys\n"
        "from xmod_lab import cli\n"
        "for argv in (['xmod-train', '--help'], ['xmod-train', 'adapter.reduction_factr=4'], "
        "['xmod-eval', 'model=tinyy'], ['xmod-train', '--cfg', 'job']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        cli.main(argv[0].split('-')[1])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.mark.parametrize(("args", "expected"), [
    (["adapter.reduction_factr=4"], "did you mean adapter.adapter_reduction_factor=4?"),
    (["model=tinyy"], "did you mean model=tiny?"),
    (["modle=tiny"], "did you mean model=tiny?"),
    (["trainer.max_epoch=3"], "did you mean trainer.max_epochs=3?"),
    (["freeze.policy=paperr"], "did you mean freeze.policy=paper?"),
    (["optimizer.lr=1e-3", "schedulr.name=constant"], "did you mean scheduler.name=constant?"),
], ids=["key-in-typed-group", "group-option", "group-name", "key-in-target-group", "enum-value", "two-overrides"])
def test_typo_gets_the_closest_valid_key_in_one_message(tmp_path, args, expected):
    out = cli("xmod-train", *args, cwd=tmp_path)
    assert out.returncode == 1
    assert expected in out.stderr, out.stderr
    assert out.stderr.startswith("xmod-train: error: ")
    assert "Traceback" not in out.stderr and "object_type=" not in out.stderr
    assert "To append to your config" not in out.stderr  # Hydra's hint would only lead to a second error
    assert not (tmp_path / "outputs").exists()


def test_full_error_shows_the_traceback(tmp_path):
    out = cli("xmod-train", "adapter.reduction_factr=4", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode == 1 and "Traceback" in out.stderr and "did you mean" not in out.stderr


def test_bash_quoted_hydra_braces_are_a_clear_error(tmp_path):
    """The README's local-data line without its outer quotes: Hydra reads {lang} as a dict."""
    out = cli("xmod-train", "data.source.path=/data/xnli/{lang}/{split}.jsonl", cwd=tmp_path)
    assert out.returncode == 1 and "mismatched input '{'" in out.stderr and "Traceback" not in out.stderr
    quoted = cli("xmod-train", "data=xnli", "data.source.path='/data/xnli/{lang}/{split}.jsonl'", "--cfg", "job",
                 cwd=tmp_path)
    assert quoted.returncode == 0, quoted.stderr
    assert "/data/xnli/{lang}/{split}.jsonl" in quoted.stdout


@pytest.mark.slow
def test_bad_value_fails_with_one_message_and_leaves_no_run_directory(tmp_path):
    out = cli("xmod-train", "languages.eval=[en,sw]", "data.n_train=32", "data.n_eval=8", cwd=tmp_path)
    assert out.returncode == 1
    assert "xmod-train: error: languages.eval: ['sw'] are not synthetic languages" in out.stderr
    assert "Traceback" not in out.stderr and "Error executing job" not in out.stderr  # the one message only
    assert not (tmp_path / "outputs").exists(), list((tmp_path / "outputs").rglob("*"))  # not even empty folders


@pytest.mark.slow
def test_hub_model_out_of_reach_is_one_message_naming_it_and_leaves_no_directory(tmp_path):
    out = cli("xmod-train", "experiment=xnli_zero_shot", "trainer=cpu", cwd=tmp_path,
              env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 1
    assert out.stderr.startswith("xmod-train: error: model 'facebook/xmod-base' is not in the local Hugging Face cache")
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 2, out.stderr  # + the help hint
    assert not (tmp_path / "outputs").exists(), list((tmp_path / "outputs").rglob("*"))


@pytest.mark.slow
def test_run_that_fails_after_it_started_is_marked_failed(tmp_path):
    """A failure once config.yaml is written (here: the trainer rejects an argument) keeps the directory,
    marked run_failed with the error, also at the end of the run's log."""
    out = cli("xmod-train", "+trainer.max_epoch=3", "data.n_train=32", "data.n_eval=8", cwd=tmp_path)
    assert out.returncode == 1
    assert "did you mean trainer.max_epochs?" in out.stderr and "Traceback" not in out.stderr
    (run,) = (tmp_path / "outputs" / "default" / "runs").iterdir()
    assert run.name.endswith("_max_epoch-3+n_train-32+n_eval-8")
    assert (run / "config.yaml").is_file() and not (run / "run_complete").exists()
    failed = (run / run_dir.FAILED).read_text()
    assert failed.startswith("InstantiationException") and "max_epoch" in failed
    assert "run failed: InstantiationException" in (run / "train.log").read_text()


# --------------------------------------------------------------------------- run directory names


def test_override_summary_is_short_and_file_name_safe():
    summary = run_dir.override_summary(
        ["freeze=paper", "adapter.adapter_reduction_factor=4", "+languages.add.rm_CH=[de_DE,fr_XX]",
         "ckpt_path=/a/b/last.ckpt", "hydra.run.dir=x", "data.source.path='/d/{lang}.jsonl'"])
    assert summary == "freeze-paper+adapter_reduction_factor-4+2more"  # 60 characters at most
    assert run_dir.override_summary(["data.source.path='/d/{lang}.jsonl'"]) == "path-d-lang-.jsonl"
    long = run_dir.override_summary([f"a.key{i}={'v' * 10}" for i in range(10)])
    assert len(long) <= 60 and long.endswith(tuple(f"+{n}more" for n in range(1, 11)))
    assert run_dir.override_summary(["optimizer.lr=1e-3", "seed=2"], keys={"seed"}) == "seed-2"


def test_a_run_directory_is_a_valid_hydra_value_unquoted(tmp_path):
    """`xmod-eval ckpt_path=<run dir>/checkpoints/last.ckpt` pasted as is: no `=` or `,` in the name."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    name = Path(run_dir.new_run_dir(str(tmp_path), ["+languages.add.rm_CH=[de_DE,fr_XX]", "optimizer.lr=1e-4"])).name
    (parsed,) = OverridesParser.create().parse_overrides([f"ckpt_path=runs/{name}/last.ckpt"])
    assert parsed.value() == f"runs/{name}/last.ckpt" and not parsed.is_sweep_override()


def test_two_runs_started_in_the_same_second_get_two_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir.time, "strftime", lambda fmt: "2026-11-29_10-00-00")
    first = run_dir.new_run_dir(str(tmp_path), ["freeze=paper"])
    assert run_dir.new_run_dir(str(tmp_path), ["freeze=paper"]) == first  # resolved again in one process
    monkeypatch.setattr(run_dir, "_CLAIMED", {})  # a second process
    second = run_dir.new_run_dir(str(tmp_path), ["freeze=paper"])
    assert Path(first).name == "2026-11-29_10-00-00_freeze-paper"
    assert Path(second).name == "2026-11-29_10-00-00_freeze-paper-2"
    assert Path(first).is_dir() and Path(second).is_dir()


def test_results_never_sit_beside_another_runs_config(tmp_path):
    from omegaconf import OmegaConf

    from xmod_lab import runs

    runs.start_run(tmp_path, OmegaConf.create({"seed": 1}))
    runs.finish_run(tmp_path, "test", {"en": {"acc": 1.0}}, {"en": "en_XX"}, {})
    assert (tmp_path / "results.json").is_file()
    runs.start_run(tmp_path, OmegaConf.create({"seed": 2}))
    (tmp_path / "config.yaml").write_text("seed: 3\n")  # another run, given the same directory
    with pytest.raises(RuntimeError, match="no longer the config this run started with"):
        runs.finish_run(tmp_path, "test", {"en": {"acc": 2.0}}, {"en": "en_XX"}, {})
    assert not (tmp_path / "results.json").exists()


def test_failure_marker_names_the_error_or_the_interruption(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 1\n")
    try:
        raise ValueError("loss is nan at step 7")
    except ValueError as err:
        assert run_dir.record_failure(run, err) == "marked"
    assert (run / run_dir.FAILED).read_text().startswith("ValueError: loss is nan at step 7\n\nTraceback")
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)  # what Lightning does after its graceful shutdown
    except SystemExit as err:
        run_dir.record_failure(run, err)
    assert (run / run_dir.FAILED).read_text().startswith("interrupted (Ctrl-C)")
    # a directory this process did not create is never removed, even when it holds nothing else
    bare = tmp_path / "given"
    (bare / ".hydra").mkdir(parents=True)
    assert run_dir.record_failure(bare, ValueError("x")) == "marked" and bare.is_dir()


@pytest.mark.slow
def test_console_is_quiet_by_default_and_verbose_with_v(tmp_path):
    """Default: the run's own messages (validation scores per epoch) without Lightning's banners and tips,
    data-cache lines or framework deprecation warnings; -v shows them."""
    quiet = cli("xmod-train", "debug=fdr", "pretrain=none", "data.n_train=64", "data.n_eval=16", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    text = quiet.stdout + quiet.stderr
    assert "validation acc: en " in text and "test results" in text
    for noise in ("GPU available", "Tip:", "tokenized", "LeafSpec", "INFO: "):
        assert noise not in text, noise
    assert text.count("Total params") == 1  # the model summary printed once, not by two handlers
    verbose = cli("xmod-train", "-v", "debug=fdr", "pretrain=none", "data.n_train=64", "data.n_eval=16", cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    text = verbose.stdout + verbose.stderr
    assert "GPU available" in text and "tokenized" in text
