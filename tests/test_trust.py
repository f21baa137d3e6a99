"""Files handed over are data: a reused config.yaml, a checkpoint's hyper-parameters and tokenizer record, an
exported directory. Each way to reach code is refused with one message naming the file, before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.tasks.run_helpers import SHRINK, SYNTHETIC, compose_run, no_hydra
from tests.test_cli import cli
from xmod_lab.data.tokenizer import check_tokenizer_files, load_tokenizer, write_tokenizer_files
from xmod_lab.eval import REUSED_GROUPS
from xmod_lab.trust import check_hyperparameters, check_reused_config


class Payload:
    """Unpickling it creates a file (it could run anything)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def saved_config(tmp_path_factory):
    """A run's config.yaml as xmod-train writes it (every interpolation resolved)."""
    tmp = tmp_path_factory.mktemp("trust")
    with no_hydra():
        cfg = compose_run("train", tmp / "run", tmp / "cache", [*SHRINK, *SYNTHETIC])
    return OmegaConf.to_yaml(cfg, resolve=True)


def crafted(saved_config: str, **changes) -> OmegaConf:
    saved = OmegaConf.create(saved_config)
    for key, value in changes.items():
        OmegaConf.update(saved, key.replace("__", "."), value, merge=False, force_add=True)
    return saved


def test_a_genuine_run_config_is_accepted(saved_config):
    check_reused_config(OmegaConf.create(saved_config), "config.yaml", list(REUSED_GROUPS))
    # the defining module's name of a shipped target is the same option
    canonical = crafted(saved_config, task___target_="xmod_lab.tasks.sequence_classification.SequenceClassificationTask")
    check_reused_config(canonical, "config.yaml", list(REUSED_GROUPS))


MARKER = "/nonexistent-xmod-marker"


@pytest.mark.parametrize(("changes", "refusal"), [
    # attribute paths through a module of ours to someone else's callable
    ({"data___target_": "xmod_lab.checkpoints.torch.load", "data__weights_only": False},
     r"data._target_ refused: _target_='xmod_lab.checkpoints.torch.load' is not one of xmod-lab's own"),
    ({"data___target_": "xmod_lab.data.tokenizer.AutoTokenizer.from_pretrained"}, r"data._target_ refused"),
    ({"data___target_": "xmod_lab.tracking.os.system"}, r"data._target_ refused"),
    ({"data___target_": "xmod_lab.data.tokenizer.AutoTokenizer"}, r"data._target_ refused"),
    # our own functions that are not tasks or datamodules (this one writes files where it is told)
    ({"data___target_": "xmod_lab.data.tokenizer.write_tokenizer_files"}, r"data._target_ refused"),
    ({"task___target_": "xmod_lab.data.SentencePairDataModule"}, r"task._target_ refused"),
    ({"task___target_": "os.system"}, r"task._target_ refused"),
    # a target where none belongs, nested targets, Hydra's instantiation keys
    ({"model___target_": "xmod_lab.tasks.SequenceClassificationTask"}, r"model._target_ refused"),
    ({"data__source": {"_target_": "builtins.exec", "_args_": ["print(1)"]}},
     r"data.source._target_ refused: a nested _target_"),
    ({"task__model__config": {"x": [{"_target_": "os.system"}]}}, r"task.model.config.x\[0\]._target_ refused"),
    ({"data___partial_": True}, r"data._partial_ refused: Hydra's instantiation keys"),
    ({"task___args_": ["x"]}, r"task._args_ refused"),
    ({"data___recursive_": False}, r"data._recursive_ refused"),
    # arguments that enable remote code or unpickling, at any depth
    ({"data__trust_remote_code": True}, r"data.trust_remote_code refused: trust_remote_code=True"),
    ({"model__config__trust_remote_code": "yes"}, r"model.config.trust_remote_code refused"),
    ({"task__model__weights_only": False}, r"task.model.weights_only refused"),
    ({"data___instantiator": "os.system"}, r"data._instantiator refused"),
    # resolvers are not evaluated from a file handed over: anywhere in it, whole nodes or inside strings
    ({"adapter": "${xmod_run_dir:" + MARKER + ",[]}"}, r"adapter refused: .*calls the resolver 'xmod_run_dir'"),
    ({"data__root": "${xmod_sweep_dir:" + MARKER + "}/x"}, r"data.root refused: .*'xmod_sweep_dir'"),
    ({"languages__eval": ["en", "${oc.env:HOME}"]}, r"languages.eval\[1\] refused: .*'oc.env'"),
    ({"trainer__default_root_dir": "${xmod_run_dir:" + MARKER + ",[]}"}, r"trainer.default_root_dir refused"),
])
def test_a_handed_over_config_cannot_name_or_enable_code(saved_config, changes, refusal):
    saved = crafted(saved_config, **changes)
    with pytest.raises(ValueError, match=r"^config.yaml: " + refusal):
        check_reused_config(saved, "config.yaml", list(REUSED_GROUPS))
    assert not Path(MARKER).exists()


def test_checkpoint_hyperparameters_name_no_callable():
    check_hyperparameters({"model": {"pretrained": None}, "optimizer": {"lr": 1e-3}, "weights_only": True}, "x.ckpt")
    for bad in ({"_instantiator": "os.system"}, {"model": {"_target_": "os.system"}},
                {"model": {"config": {"trust_remote_code": True}}}):
        with pytest.raises(ValueError, match=r"^x.ckpt: hyper_parameters\..* refused"):
            check_hyperparameters(bad, "x.ckpt")


# -- tokenizer files -----------------------------------------------------------------------------------------------

AUTO_MAP = json.dumps({"tokenizer_class": "XLMRobertaTokenizer",
                       "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}}).encode()


@pytest.mark.parametrize(("files", "refusal"), [
    ({"tokenizer.json": b"{}", "tokenization_evil.py": b"open('x', 'w')"},
     r"'tokenization_evil.py'\): remote code refused"),
    ({"tokenizer.json": b"{}", "tokenizer_config.json": AUTO_MAP},
     r"'tokenizer_config.json'\): remote code refused: its auto_map"),
    ({"tokenizer.json": b"{}", "config.json": AUTO_MAP}, r"'config.json'\): remote code refused"),
    ({"tokenizer.json": b"{}", "evil.so": b""}, r"'evil.so'\): refused: not a tokenizer file"),
    ({"tokenizer.json": b"{}", ".bashrc.json": b"{}"}, r"'.bashrc.json'\): refused: a tokenizer record holds plain"),
    ({"../escape.json": b"{}"}, r"'../escape.json'\): refused: a tokenizer record holds plain file names"),
])
def test_a_tokenizer_record_with_code_writes_nothing(tmp_path, files, refusal):
    with pytest.raises(ValueError, match=r"^x.ckpt \(tokenizer file " + refusal):
        check_tokenizer_files(files, "x.ckpt")  # the checkpoint is named, and the file in it
    with pytest.raises(ValueError, match=refusal):
        write_tokenizer_files({"fingerprint": "0", "files": files}, tmp_path / "tokenizer", "x.ckpt")
    assert not (tmp_path / "tokenizer").exists() and not (tmp_path / "escape.json").exists()


@pytest.mark.parametrize("with_code", [True, False])
def test_a_tokenizer_directory_with_custom_code_is_refused_without_a_prompt(tmp_path, with_code):
    marker = tmp_path / "ran"
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_bytes(AUTO_MAP)
    if with_code:
        (folder / "tokenization_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    expected = "tokenization_evil.py: remote code refused" if with_code else "tokenizer_config.json: remote code refused"
    with pytest.raises(ValueError, match=expected):
        load_tokenizer(str(folder))
    assert not marker.exists()


# -- the commands ----------------------------------------------------------------------------------------------------


def pickled_export(folder: Path, marker: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    torch.save({"weight": torch.zeros(2), "note": Payload(marker)}, folder / "pytorch_model.bin")
    return folder


def test_xmod_eval_refuses_pickled_export_weights_in_one_message(tmp_path):
    marker = tmp_path / "payload-ran"
    export = pickled_export(tmp_path / "export", marker)
    out = cli("xmod-eval", f"model.pretrained={export}", cwd=tmp_path)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert errors[-1] == (f"xmod-eval: error: {export / 'pytorch_model.bin'}: unpickling refused: it holds objects "
                        "beyond tensors and plain values, and unpickling them could run code (it would import and "
                        "call io.open); only files of tensors and plain values are read"), out.stderr
    assert "Traceback" not in out.stderr and "did you mean" not in out.stderr and "weights_only" not in out.stderr
    assert not marker.exists()
    runs = tmp_path / "outputs" / "eval" / "runs"
    assert not runs.exists() or not list(runs.iterdir())


def test_xmod_train_refuses_a_pickled_checkpoint_before_pretraining(tmp_path):
    """The default experiment pre-trains first (~100 s): the checkpoint is refused before that starts."""
    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": {}, "note": Payload(marker)}, tmp_path / "last.ckpt")
    out = cli("xmod-train", f"ckpt_path={tmp_path / 'last.ckpt'}", cwd=tmp_path)
    assert out.returncode == 1
    assert f"xmod-train: error: {tmp_path / 'last.ckpt'}: unpickling refused" in out.stderr
    assert "Traceback" not in out.stderr
    assert not marker.exists()
    assert not (tmp_path / "cache").exists()  # no pre-training, no data generated
    runs = tmp_path / "outputs" / "default" / "runs"
    assert not runs.exists() or not list(runs.iterdir())


def test_xmod_train_refuses_a_tokenizer_directory_with_code_before_any_work(tmp_path):
    from xmod_lab.train import train

    marker = tmp_path / "ran"
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_bytes(AUTO_MAP)
    (folder / "tokenization_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    with no_hydra():
        cfg = compose_run("train", tmp_path / "run", tmp_path / "cache",
                          [*SHRINK, "data=xnli", f"data.tokenizer={folder}", "pretrain=synthetic_mlm"])
    with pytest.raises(ValueError, match=rf"^{folder / 'tokenization_evil.py'}: remote code refused"):
        train(cfg)
    assert not marker.exists()
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # no pre-training, no data
