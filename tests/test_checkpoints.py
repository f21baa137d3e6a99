"""Checkpoints and what travels with them: last.ckpt is the latest state, files appear whole or not at all,
resuming continues at the saved step, the tokenizer goes with the weights, and loading runs no code."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from safetensors.torch import load_file

from tests.tasks.run_helpers import SHRINK, SYNTHETIC, compose_run, no_hydra
from xmod_lab.checkpoints import TOKENIZER_KEY, load_checkpoint
from xmod_lab.data.tokenizer import load_tokenizer, tokenizer_fingerprint, train_tokenizer
from xmod_lab.eval import evaluate
from xmod_lab.train import train

STEPS_PER_EPOCH = 6  # 96 synthetic training pairs, batches of 16


def run_train(tmp_path: Path, *overrides: str, name: str = "run") -> tuple[dict, Path]:
    with no_hydra():
        cfg = compose_run("train", tmp_path / name, tmp_path.parent / "cache", [*SHRINK, *SYNTHETIC, *overrides])
    return train(cfg), tmp_path / name


def run_eval(tmp_path: Path, *overrides: str, name: str = "eval") -> tuple[dict, Path]:
    shrink = [o for o in SHRINK if not o.startswith("callbacks.")]
    with no_hydra():
        cfg = compose_run("eval", tmp_path / name, tmp_path.parent / "cache", [*shrink, *SYNTHETIC, *overrides])
    return evaluate(cfg), tmp_path / name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 2-epoch run, exported; its scores are what every later evaluation must reproduce."""
    tmp = tmp_path_factory.mktemp("ckpt") / "t"
    tmp.mkdir()
    metrics, run_dir = run_train(tmp, "trainer.max_epochs=2", f"export_dir={tmp / 'export'}")
    return tmp, metrics, run_dir


def step_of(path: Path) -> int:
    return int(load_checkpoint(path)["global_step"])


# -- last.ckpt and atomic writes -------------------------------------------------------------------------------


def test_last_ckpt_is_the_final_state_even_when_the_metric_did_not_improve(tmp_path):
    # monitoring `epoch` in min mode: epoch 0 stays the best, as a metric that never improves again would
    _, run_dir = run_train(tmp_path, "trainer.max_epochs=2", "monitor=epoch", "monitor_mode=min")
    results = json.loads((run_dir / "results.json").read_text())
    assert step_of(Path(results["checkpoint"])) == STEPS_PER_EPOCH  # the best: epoch 0
    assert step_of(run_dir / "checkpoints" / "last.ckpt") == 2 * STEPS_PER_EPOCH == results["global_step"]


class LastStepSpy(Callback):
    """Before each training step, the step last.ckpt holds."""

    seen: list[tuple[int, int | None]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        LastStepSpy.seen.append((trainer.global_step, step_of(last) if last.is_file() else None))


def test_last_ckpt_is_rewritten_every_n_steps_within_an_epoch(tmp_path):
    LastStepSpy.seen = []
    # monitoring `step` in max mode: every validation improves, so a best checkpoint is due at each epoch end
    _, run_dir = run_train(tmp_path, "trainer.max_epochs=2", "callbacks.model_checkpoint.last_every_n_train_steps=4",
                           "monitor=step", "monitor_mode=max", "+callbacks.spy._target_=tests.test_checkpoints.LastStepSpy")
    expected = {0: None, 1: None, 2: None, 3: None, 4: 4, 5: 4, 6: 6, 7: 6, 8: 8, 9: 8, 10: 8, 11: 8}
    assert dict(LastStepSpy.seen) == expected  # saved at steps 4 and 8 and at the epoch end (6)
    # step 12 is both a step-save and an epoch end: the best checkpoint of that step was still written
    results = json.loads((run_dir / "results.json").read_text())
    assert Path(results["checkpoint"]).name == "epoch01-step12.ckpt" and step_of(Path(results["checkpoint"])) == 12
    assert step_of(run_dir / "checkpoints" / "last.ckpt") == 12


def same_content(a, b, run_a: str, run_b: str) -> bool:
    """Checkpoint contents equal, tensors exactly, with paths of run A read as run B's."""
    if isinstance(a, dict):  # keys too: best_k_models is keyed by path
        a = {k.replace(run_a, run_b) if isinstance(k, str) else k: v for k, v in a.items()}
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_content(a[k], b[k], run_a, run_b) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same_content(x, y, run_a, run_b) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, str):
        return isinstance(b, str) and a.replace(run_a, run_b) == b
    return a == b


@pytest.mark.slow
def test_last_ckpt_linked_to_the_best_of_its_step_holds_what_a_write_would(tmp_path):
    # monitoring `step` in max mode: every epoch writes a best checkpoint, then last.ckpt at the same step
    monitor = ("monitor=step", "monitor_mode=max")
    runs = {}
    for name, link in (("linked", "true"), ("written", "false")):
        _, first = run_train(tmp_path, *monitor, f"callbacks.model_checkpoint.link_last={link}", name=name)
        # the run goes on from it for a second epoch (its own directory: the first save there is linked too)
        _, resumed = run_train(tmp_path, "trainer.max_epochs=2", *monitor, f"callbacks.model_checkpoint.link_last={link}",
                               f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", name=f"{name}-resumed")
        runs[name] = (first, "epoch00-step6.ckpt"), (resumed, "epoch01-step12.ckpt")
    for (linked, best), (written, _) in zip(runs["linked"], runs["written"], strict=True):
        for run in (linked, written):
            assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [best, "last.ckpt"]
        assert os.path.samefile(linked / "checkpoints" / best, linked / "checkpoints" / "last.ckpt")  # one write
        assert not os.path.samefile(written / "checkpoints" / best, written / "checkpoints" / "last.ckpt")
        assert same_content(load_checkpoint(linked / "checkpoints" / "last.ckpt"),
                            load_checkpoint(written / "checkpoints" / "last.ckpt"), str(linked), str(written))
    results = [json.loads((runs[name][1][0] / "results.json").read_text()) for name in ("linked", "written")]
    assert results[0]["test"] == results[1]["test"] and results[0]["global_step"] == 2 * STEPS_PER_EPOCH


class FullDisk(Callback):
    """The disk fills up halfway through writing the first checkpoint."""

    def on_fit_start(self, trainer, pl_module):
        io = trainer.strategy.checkpoint_io

        def save_checkpoint(checkpoint, path, storage_options=None):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
            raise OSError(self.errno, os.strerror(self.errno))

        io.save_checkpoint = save_checkpoint

    errno = errno.ENOSPC


class FileTooLarge(FullDisk):
    errno = errno.EFBIG


@pytest.mark.parametrize(("callback", "reason"), [("FullDisk", "No space left on device"),
                                                  ("FileTooLarge", "File too large")])
def test_a_failed_write_leaves_no_file_under_a_checkpoint_name(tmp_path, callback, reason):
    with pytest.raises(OSError, match=rf"could not write the checkpoint {tmp_path}/run/checkpoints/.*\.ckpt: {reason}"):
        run_train(tmp_path, f"+callbacks.disk._target_=tests.test_checkpoints.{callback}")
    assert list((tmp_path / "run" / "checkpoints").glob("*")) == []
    assert not (tmp_path / "run" / "run_complete").exists()


@pytest.mark.parametrize("resumed_into", ["its own directory", "a new directory"])
def test_a_partial_file_left_by_a_kill_is_removed_when_the_run_restarts(tmp_path, resumed_into):
    _, run_dir = run_train(tmp_path)
    leftover = run_dir / "checkpoints" / ".last.ckpt.partial"
    leftover.write_bytes(b"PK\x03\x04 half a checkpoint")  # what a kill during a save leaves
    name = "run" if resumed_into == "its own directory" else "resumed"
    _, resumed = run_train(tmp_path, f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=2",
                           name=name)
    assert not leftover.exists()
    assert step_of(resumed / "checkpoints" / "last.ckpt") == 2 * STEPS_PER_EPOCH


class Crash(Callback):
    """The process dies before its sixth step (after last.ckpt was written at step 4)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 5:
            raise RuntimeError("killed")


class BatchSpy(Callback):
    """The training batches, in order: (step, the examples' first tokens)."""

    seen: list[tuple[int, list[int]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        BatchSpy.seen.append((trainer.global_step, batch["input_ids"][:, 1].tolist()))


def test_resume_mid_epoch_continues_at_the_saved_step_and_batch_and_logs_each_step_once(tmp_path):
    spy = ["trainer.max_epochs=2", "trainer.log_every_n_steps=1", "+callbacks.spy._target_=tests.test_checkpoints.BatchSpy"]
    BatchSpy.seen = []
    run_train(tmp_path, *spy, name="uninterrupted")
    reference = list(BatchSpy.seen)
    assert [step for step, _ in reference] == list(range(2 * STEPS_PER_EPOCH))

    BatchSpy.seen = []
    with pytest.raises(RuntimeError, match="killed"):
        run_train(tmp_path, *spy, "callbacks.model_checkpoint.last_every_n_train_steps=2",
                  "+callbacks.crash._target_=tests.test_checkpoints.Crash", name="first")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert step_of(last) == 4  # one step lost: at most last_every_n_train_steps - 1
    BatchSpy.seen = []
    _, resumed = run_train(tmp_path, *spy, f"ckpt_path={last}", name="resumed")
    assert BatchSpy.seen == reference[4:]  # the same steps on the same batches as the run never interrupted
    assert json.loads((resumed / "results.json").read_text())["global_step"] == 2 * STEPS_PER_EPOCH
    assert step_of(resumed / "checkpoints" / "last.ckpt") == 2 * STEPS_PER_EPOCH
    with (resumed / "csv" / "metrics.csv").open() as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert steps == list(range(4, 2 * STEPS_PER_EPOCH))  # from the saved step on, each once, none restarted


# -- the tokenizer travels with the model ------------------------------------------------------------------------


def test_run_directory_and_checkpoints_record_the_tokenizer(trained):
    _, _, run_dir = trained
    saved = load_tokenizer(str(run_dir / "tokenizer"))
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        record = load_checkpoint(ckpt)[TOKENIZER_KEY]
        assert record["fingerprint"] == tokenizer_fingerprint(saved)
        assert "tokenizer.json" in record["files"]


def test_eval_of_a_language_subset_reproduces_the_run_scores(trained):
    """The synthetic data folder (and its tokenizer) depends on the languages asked for; the checkpoint's own
    tokenizer must be used whatever they are."""
    tmp, metrics, run_dir = trained
    results = json.loads((run_dir / "results.json").read_text())
    again, eval_dir = run_eval(tmp, f"ckpt_path={results['checkpoint']}", "languages.eval=[de,fr]", name="subset")
    assert sorted(k for k in again if k.startswith("test/")) == ["test/avg/acc", "test/de/acc", "test/fr/acc", "test/zs_avg/acc"]
    for key in ("test/de/acc", "test/fr/acc"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key


def test_export_evaluates_with_its_own_tokenizer(trained):
    tmp, metrics, _ = trained
    again, _ = run_eval(tmp, f"model.pretrained={tmp / 'export'}", "languages.eval=[fr,de]", name="export-subset")
    for key in ("test/de/acc", "test/fr/acc"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key


def test_a_tokenizer_that_does_not_match_the_checkpoint_is_a_clear_error(trained, tmp_path):
    from xmod_lab import runs
    from xmod_lab.data.sentence_pair import SentencePairDataModule

    _, _, run_dir = trained
    other = tmp_path / "other"
    train_tokenizer([f"Anna {i} kalo Ben {i % 7}" for i in range(300)], 60, other)
    source = next(Path(p) for p in run_dir.parent.parent.glob("cache/synthetic/*/xnli"))

    def datamodule(tokenizer: str) -> SentencePairDataModule:
        return SentencePairDataModule(source={"path": f"{source}/{{lang}}/{{split}}.jsonl"}, tokenizer=tokenizer,
                                      languages=["en_XX", "de_DE"], train_langs=["en"])

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    chosen = runs.model_tokenizer(tmp_path / "out", str(ckpt), None, explicit=True)
    assert chosen.path is None  # data.tokenizer given: kept, and checked
    with pytest.raises(ValueError, match=r"is not the tokenizer the checkpoint .*last.ckpt was trained with"):
        runs.check_model_tokenizer(datamodule(str(other)), chosen)
    chosen = runs.model_tokenizer(tmp_path / "out", str(ckpt), None, explicit=False)  # not chosen: the checkpoint's
    built = datamodule(chosen.path)
    runs.check_model_tokenizer(built, chosen)
    assert tokenizer_fingerprint(built.tokenizer) == load_checkpoint(ckpt)[TOKENIZER_KEY]["fingerprint"]


# -- no code runs from a file a user was handed ------------------------------------------------------------------


class Payload:
    """What a crafted checkpoint can carry: unpickling it creates a file (it could run anything)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def crafted(trained, tmp_path) -> tuple[Path, Path]:
    """A copy of the run whose last.ckpt also holds a payload."""
    _, _, run_dir = trained
    copy = tmp_path / "handed-over"
    shutil.copytree(run_dir, copy)
    ckpt = copy / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(ckpt)
    marker = tmp_path / "payload-ran"
    checkpoint["hyper_parameters"]["note"] = Payload(marker)
    torch.save(checkpoint, ckpt)
    return ckpt, marker


def test_eval_refuses_a_checkpoint_that_would_run_code(crafted, tmp_path):
    ckpt, marker = crafted
    with pytest.raises(ValueError, match=r"last.ckpt: unpickling refused.*could run code.*io.open"):
        run_eval(tmp_path, f"ckpt_path={ckpt}")
    assert not marker.exists()
    assert not (tmp_path / "eval" / "run_complete").exists()


def test_train_refuses_to_resume_from_a_checkpoint_that_would_run_code(crafted, tmp_path):
    ckpt, marker = crafted
    with pytest.raises(ValueError, match=r"last.ckpt: unpickling refused.*could run code.*io.open"):
        run_train(tmp_path, f"ckpt_path={ckpt}", "trainer.max_epochs=3")
    assert not marker.exists()


def test_a_run_config_cannot_name_arbitrary_callables(trained, tmp_path):
    _, _, run_dir = trained
    copy = tmp_path / "handed-over"
    shutil.copytree(run_dir, copy)
    config = (copy / "config.yaml").read_text()
    target = "_target_: xmod_lab.data.synthetic.synthetic_nli"
    assert target in config  # the test must actually plant the payload
    (copy / "config.yaml").write_text(config.replace(target, "_target_: os.system"))
    with pytest.raises(ValueError, match=r"config.yaml: data._target_ refused: _target_='os.system' is not one of xmod-lab's own"):
        run_eval(tmp_path, f"ckpt_path={copy / 'checkpoints' / 'last.ckpt'}")


def handed_over(trained, tmp_path) -> Path:
    _, _, run_dir = trained
    copy = tmp_path / "handed-over"
    shutil.copytree(run_dir, copy)
    return copy


@pytest.mark.parametrize("target", ["xmod_lab.checkpoints.torch.load", "xmod_lab.tracking.torch.load"])
def test_a_run_config_cannot_reach_a_callable_through_a_module_of_ours(trained, tmp_path, target):
    """The bypass of a prefix allow-list: `<our module>.torch.load` with weights_only=false and a payload."""
    copy = handed_over(trained, tmp_path)
    marker = tmp_path / "payload-ran"
    torch.save(Payload(marker), tmp_path / "payload.pt")
    saved = OmegaConf.load(copy / "config.yaml")
    saved.data = {"_target_": target, "f": str(tmp_path / "payload.pt"), "weights_only": False}
    OmegaConf.save(saved, copy / "config.yaml")
    with pytest.raises(ValueError, match=rf"config.yaml: data._target_ refused: _target_='{target}' is not one"):
        run_eval(tmp_path, f"ckpt_path={copy / 'checkpoints' / 'last.ckpt'}")
    assert not marker.exists()
    assert not (tmp_path / "eval").exists()  # refused before the run wrote anything


def test_a_run_config_cannot_direct_writes_outside_this_machines_paths(trained, tmp_path):
    """A config.yaml handed over names the data cache and generated-data folders of another machine: the
    evaluation writes to its own (and scores the same)."""
    _, metrics, _ = trained
    copy = handed_over(trained, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    saved = OmegaConf.load(copy / "config.yaml")
    saved.data.root, saved.data.cache_dir = str(elsewhere / "synthetic"), str(elsewhere / "tokenized")
    OmegaConf.save(saved, copy / "config.yaml")
    again, _ = run_eval(tmp_path, f"ckpt_path={copy / 'checkpoints' / 'last.ckpt'}")
    assert not elsewhere.exists()
    assert again["test/avg/acc"] == pytest.approx(metrics["test/avg/acc"], abs=1e-6)


@pytest.mark.parametrize("command", ["eval", "train"])
def test_a_checkpoint_whose_tokenizer_carries_code_is_refused_before_anything_is_written(trained, tmp_path,
                                                                                         command):
    copy = handed_over(trained, tmp_path)
    ckpt = copy / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(ckpt)
    marker = tmp_path / "payload-ran"
    files = checkpoint[TOKENIZER_KEY]["files"]
    files["tokenization_evil.py"] = f"open({str(marker)!r}, 'w')\n".encode()
    settings = json.loads(files["tokenizer_config.json"])
    settings["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    files["tokenizer_config.json"] = json.dumps(settings).encode()
    torch.save(checkpoint, ckpt)
    run = run_eval if command == "eval" else run_train
    with pytest.raises(ValueError, match=r"last.ckpt \(tokenizer file 'tokenization_evil.py'\): remote code refused"):
        run(tmp_path, f"ckpt_path={ckpt}", "trainer.max_epochs=3")
    assert not marker.exists()
    assert not (tmp_path / "eval").exists() and not (tmp_path / "run").exists()  # no tokenizer/ written


@pytest.mark.parametrize("planted", ["code", "auto_map", "pickle"])
def test_an_export_with_code_or_pickled_weights_is_refused(trained, tmp_path, planted):
    tmp, _, _ = trained
    export = tmp_path / "export"
    shutil.copytree(tmp / "export", export)
    marker = tmp_path / "payload-ran"
    if planted == "code":
        (export / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
        refusal = "modeling_evil.py: remote code refused"
    elif planted == "auto_map":
        settings = json.loads((export / "config.json").read_text())
        settings["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
        (export / "config.json").write_text(json.dumps(settings))
        refusal = "config.json: remote code refused: its auto_map"
    else:
        state = load_file(export / "model.safetensors")
        state["roberta.note"] = Payload(marker)
        (export / "model.safetensors").unlink()
        torch.save(state, export / "pytorch_model.bin")
        refusal = "pytorch_model.bin: unpickling refused: .*could run code"
    with pytest.raises(ValueError, match=refusal):
        run_eval(tmp_path, f"model.pretrained={export}")
    assert not marker.exists()
    assert not (tmp_path / "eval").exists()


# -- a real kill -9 ------------------------------------------------------------------------------------------------


class StepFile(Callback):
    """Writes the number of finished steps to <run>/step.txt after each one (what the killer watches)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # written aside and renamed: the watcher (and a kill) never sees a half-written, empty file
        tmp = Path(trainer.default_root_dir) / "step.txt.tmp"
        tmp.write_text(str(trainer.global_step))
        tmp.replace(tmp.with_suffix(""))


@pytest.mark.slow
def test_kill_9_at_a_random_step_loses_at_most_the_step_interval_and_resumes(tmp_path):
    """`xmod-train` (the default experiment, one epoch of 125 steps) killed with SIGKILL at a random step, then
    resumed from last.ckpt as the README says."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    every = 10
    kill_at = random.Random().randint(every + 1, 110)
    root = Path(__file__).resolve().parents[1]
    exe = str(Path(sys.executable).with_name("xmod-train"))
    env = {**os.environ, "PYTHONPATH": str(root), "XMOD_CACHE": str(tmp_path / "cache")}
    common = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
              f"callbacks.model_checkpoint.last_every_n_train_steps={every}"]
    first = tmp_path / "first"
    proc = subprocess.Popen([exe, *common, "+callbacks.steps._target_=tests.test_checkpoints.StepFile",
                             f"hydra.run.dir={first}"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    step_file, deadline = first / "step.txt", time.monotonic() + 300
    while not (step_file.is_file() and int(step_file.read_text()) >= kill_at):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = int(step_file.read_text())  # steps finished when the kill landed (or one fewer)
    for ckpt in (first / "checkpoints").glob("*.ckpt"):
        load_checkpoint(ckpt)  # every file under a checkpoint name is whole
    saved = step_of(first / "checkpoints" / "last.ckpt")
    print(f"killed after step {done} (target {kill_at}); last.ckpt at step {saved}: {done - saved} steps lost")
    assert 0 <= done - saved <= every
    assert not (first / "run_complete").exists()

    resumed = tmp_path / "resumed"
    out = subprocess.run([exe, *common, f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={resumed}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((resumed / "results.json").read_text())["global_step"] == 125
    with (resumed / "csv" / "metrics.csv").open() as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert steps == list(range(saved, 125))
