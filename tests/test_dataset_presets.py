"""Every dataset preset runs end to end on the real XTREME excerpts with only what a user expects to give: where
the files are (data.source.path, data.eval_source.path for the zero-shot QA/MC presets), a tokenizer, model=tiny
and languages. No task=, pretrain=, freeze= or label overrides: each preset brings its task, and a run that is
not the default experiment gets no synthetic pre-training and no freezing (a model from scratch).

Also given here (test conveniences only): paths, one epoch, no loader worker processes; the 5-line CC-100
excerpts need a larger held-out share (data.holdout) and shorter blocks than the MLM presets' defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from tests.tasks.run_helpers import no_hydra
from xmod_lab.data.tokenizer import train_tokenizer
from xmod_lab.train import train

RUN = ["model=tiny", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "data.num_workers=0"]
XQUAD_TRAIN = "data.source.path='{root}/xquad/{{lang}}/validation.jsonl'"  # SQuAD's schema, real rows

# preset -> (its overrides beyond path/tokenizer/model, the metrics it reports)
CASES = {
    "xnli": (["data.source.path='{root}/xnli/{{lang}}/{{split}}.jsonl'", "languages.eval=[en,de,ru,zh]"], {"acc"}),
    "pawsx": (["data.source.path='{root}/pawsx/{{lang}}/{{split}}.jsonl'", "languages.eval=[en,de]"], {"acc"}),
    "panx": (["data.source.path='{root}/panx/{{lang}}/{{split}}.jsonl'", "languages.eval=[en,de,fr,ru,zh]"],
             {"acc", "f1"}),
    "udpos": (["data.source.path='{root}/udpos/{{lang}}/{{split}}.jsonl'", "languages.eval=[en,de]"], {"acc"}),
    "squad_xquad": ([XQUAD_TRAIN, "data.eval_source.path='{root}/xquad/{{lang}}/{{split}}.jsonl'",
                     "languages.eval=[de,zh]"], {"exact_match", "f1"}),
    "mlqa": ([XQUAD_TRAIN, "data.eval_source.path='{root}/mlqa/{{lang}}'", "languages.eval=[en-de]",
              "+languages.map={{en-de:de_DE}}"], {"exact_match", "f1"}),
    # the hub's TyDi rows name their language in the id ("arabic-..."): ISO codes select them too
    "tydiqa": ([XQUAD_TRAIN, "data.eval_source.path='{root}/tydiqa/goldp'", "languages=xmod13",
                "languages.eval=[ar]"], {"exact_match", "f1"}),
    "xcopa": (["data.source.path='{copa}/{{lang}}.jsonl'", "data.eval_source.path='{copa}/{{lang}}.jsonl'",
               "languages.eval=[en,de]"], {"acc"}),
    "mlm_text": (["data.source.path='{root}/cc100/{{lang}}/train.jsonl'", "languages=xmod60",
                  "languages.train=[am,ka]", "languages.eval=[am,ka]", "data.max_length=32", "data.holdout=0.4"], {"loss", "ppl"}),
    "mlm_pretrain": (["data.source.path='{root}/cc100/{{lang}}/train.jsonl'", "languages=xmod60",
                      "languages.train=[am,ka]", "languages.eval=[am,ka]", "data.max_length=32", "data.holdout=0.4"], {"loss", "ppl"}),
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, xtreme_samples) -> Path:
    texts = []
    for path in sorted(xtreme_samples.rglob("*.jsonl")):
        for row in map(json.loads, path.read_text("utf-8").splitlines()):
            texts += [" ".join(v) if isinstance(v, list) and v and isinstance(v[0], str) else v
                      for k, v in row.items() if k != "id" and isinstance(v, str | list)]
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer([t for t in texts if isinstance(t, str)] * 2, 3000, out)
    return out


@pytest.fixture(scope="module")
def copa(tmp_path_factory) -> Path:
    """COPA's schema (the excerpts hold no COPA): two languages, four rows each."""
    folder = tmp_path_factory.mktemp("copa")
    for lang, (premise, c1, c2) in {"en": ("The man broke his toe.", "He dropped a hammer.", "He wore socks."),
                                    "de": ("Der Mann brach sich den Zeh.", "Ein Hammer fiel.", "Er trug Socken.")}.items():
        rows = [{"premise": premise, "question": q, "choice1": c1, "choice2": c2, "label": i % 2}
                for i, q in enumerate(["cause", "effect", "cause", "effect"])]
        (folder / f"{lang}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return folder


def compose_train(run_dir: Path, overrides: list[str]):
    """The config `xmod-train <overrides>` gets (no pretrain=none added: the presets decide)."""
    GlobalHydra.instance().clear()
    with initialize_config_module("xmod_lab.conf", version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=[
            f"paths.root_dir={run_dir.parent}", f"paths.output_dir={run_dir}", f"paths.cache_dir={run_dir.parent / 'cache'}",
            *overrides,
        ])
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(CASES))
def test_dataset_preset_runs_with_only_paths_tokenizer_model_and_languages(tmp_path, tokenizer, xtreme_samples,
                                                                           copa, preset):
    extra, metrics = CASES[preset]
    overrides = [f"data={preset}", f"data.tokenizer={tokenizer}", *RUN,
                 *(o.format(root=xtreme_samples, copa=copa) for o in extra)]
    run_dir = tmp_path / "run"
    with no_hydra():
        cfg = compose_train(run_dir, overrides)
        train(cfg)
    saved = (run_dir / "config.yaml").read_text()
    assert "policy: none" in saved  # freeze=auto on a model from scratch: everything trains
    assert not (tmp_path / "cache" / "pretrained").exists()  # no synthetic pre-training stage
    results = json.loads((run_dir / "results.json").read_text())
    assert results["parameters"]["frozen"] == 0
    rows = {k: v for k, v in results["test"].items() if k not in ("avg", "zs_avg")}
    assert list(rows) == list(cfg.languages.eval)
    assert {name for row in rows.values() for name in row} == metrics
    assert results["skipped_rows"] == {}  # the excerpts are clean: no row left out


@pytest.mark.slow
def test_skipped_rows_are_listed_and_counted_in_results(tmp_path, tokenizer, xtreme_samples):
    """PAWS-X rows without a label (-1) are left out of training: results.json counts them and names the first."""
    for split in ("train", "validation", "test"):
        rows = (xtreme_samples / "pawsx" / "en" / f"{split}.jsonl").read_text("utf-8").splitlines()
        if split == "train":
            rows[1] = json.dumps({**json.loads(rows[1]), "label": -1}, ensure_ascii=False)
        (tmp_path / "pawsx" / "en").mkdir(parents=True, exist_ok=True)
        (tmp_path / "pawsx" / "en" / f"{split}.jsonl").write_text("\n".join(rows) + "\n", "utf-8")
    run_dir = tmp_path / "run"
    with no_hydra():
        cfg = compose_train(run_dir, ["data=pawsx", f"data.tokenizer={tokenizer}", *RUN, "languages.eval=[en]",
                                      f"data.source.path='{tmp_path}/pawsx/{{lang}}/{{split}}.jsonl'"])
        train(cfg)
    skipped = json.loads((run_dir / "results.json").read_text())["skipped_rows"]
    assert skipped == {"train/en": {"count": 1, "first_rows": [2], "reason": "label -1: unlabeled"}}
