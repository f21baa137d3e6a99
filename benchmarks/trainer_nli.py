"""The default fine-tuning job written as a plain transformers Trainer script: the baseline that
`make bench`'s end-to-end section runs beside `xmod-train pretrain=none freeze=none` (bench_e2e.py).

Same files (the synthetic NLI data and tokenizer `xmod-train` generates under outputs/.cache), same model
(transformers' XmodForSequenceClassification at model=tiny's sizes, the 5 synthetic languages' adapters),
same recipe, read from the config files `xmod-train pretrain=none freeze=none` composes (:func:`recipe`:
conf/train.yaml's seed, AdamW and schedule, conf/trainer/cpu.yaml's epochs and gradient clipping,
conf/data/synthetic_nli.yaml's generation settings, batch sizes and max_length, conf/model/tiny.yaml's sizes),
so a change of the default experiment reaches both sides of the comparison. AdamW's weight decay is off
biases and LayerNorms on both sides; evaluation on the 5 validation sets every epoch and on the 5 test sets
at the end. Prints one JSON line.

    .venv/bin/python benchmarks/trainer_nli.py              # --threads 1: one torch thread
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import datasets
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from xmod_lab.data.languages import to_xmod_language  # noqa: E402
from xmod_lab.data.synthetic import SYNTHETIC_LANGUAGE_MAP, prepare_synthetic  # noqa: E402
from xmod_lab.data.synthetic_world import WORLD_DEFAULTS, WorldSettings  # noqa: E402
from xmod_lab.data.tokenizer import load_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "xmod_lab" / "conf"


def recipe() -> dict:
    """The default fine-tuning job's settings, from the files xmod-train composes (plain values, no Hydra)."""
    train, trainer = OmegaConf.load(CONF / "train.yaml"), OmegaConf.load(CONF / "trainer" / "cpu.yaml")
    data, model = OmegaConf.load(CONF / "data" / "synthetic_nli.yaml"), OmegaConf.load(CONF / "model" / "tiny.yaml")
    languages = OmegaConf.load(CONF / "languages" / "synthetic.yaml")
    sizes = {k: v for k, v in model.config.items() if k != "vocab_size"}  # vocab: the tokenizer's
    return {
        "seed": int(train.seed), "optimizer": OmegaConf.to_container(train.optimizer),
        "scheduler": OmegaConf.to_container(train.scheduler), "epochs": int(trainer.max_epochs),
        "max_grad_norm": float(trainer.gradient_clip_val), "batch_size": int(data.batch_size),
        "eval_batch_size": int(data.eval_batch_size or data.batch_size), "max_length": int(data.max_length),
        "generation": {k: data[k] for k in ("vocab_size", "n_train", "n_eval", "n_corpus", "seed")},
        "world": {k: OmegaConf.to_container(data[k]) if k == "orders" and data[k] is not None else data[k]
                  for k in WORLD_DEFAULTS},  # the data's world settings: the same generated folder
        "model": dict(sizes), "adapters": list(languages.adapters), "train": list(languages.train),
        "eval": list(languages.eval),
    }


def read_split(folder: Path, lang: str, split: str, tokenizer, lang_id: int, max_length: int):
    rows = [json.loads(line) for line in (folder / "xnli" / lang / f"{split}.jsonl").read_text().splitlines()]
    enc = tokenizer([r["premise"] for r in rows], [r["hypothesis"] for r in rows], truncation=True,
                    max_length=max_length)  # fmt: skip
    return datasets.Dataset.from_dict(
        {**enc, "labels": [int(r["label"]) for r in rows], "lang_ids": [lang_id] * len(rows)}
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=os.environ.get("XMOD_CACHE", "outputs/.cache") + "/synthetic")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cuda: bf16 autocast, as xmod-train's trainer=gpu (precision bf16-mixed)")
    p.add_argument("--epochs", type=int, default=None, help="default: conf/trainer/cpu.yaml's max_epochs")
    p.add_argument("--seed", type=int, default=None, help="default: conf/train.yaml's seed (xmod-train's seed=N)")
    args = p.parse_args(argv)
    import transformers

    start = time.perf_counter()
    rec = recipe()
    epochs = args.epochs or rec["epochs"]
    if args.threads:
        torch.set_num_threads(args.threads)
    seed = rec["seed"] if args.seed is None else args.seed
    transformers.set_seed(seed)
    folder = prepare_synthetic(args.root, **rec["generation"], world=WorldSettings(**rec["world"]))
    tokenizer = load_tokenizer(str(folder / "tokenizer"))
    adapters = rec["adapters"]

    def lang_id(lang: str) -> int:
        return adapters.index(to_xmod_language(lang, SYNTHETIC_LANGUAGE_MAP))

    def split(lang: str, name: str):
        return read_split(folder, lang, name, tokenizer, lang_id(lang), rec["max_length"])

    train = datasets.concatenate_datasets([split(lang, "train") for lang in rec["train"]])
    val = {lang: split(lang, "validation") for lang in rec["eval"]}
    test = {lang: split(lang, "test") for lang in rec["eval"]}
    config = transformers.XmodConfig(
        vocab_size=len(tokenizer), **rec["model"], languages=adapters, num_labels=3,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = transformers.XmodForSequenceClassification(config)

    def accuracy(pred) -> dict:
        return {"acc": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    opt, sched = rec["optimizer"], rec["scheduler"]
    with tempfile.TemporaryDirectory() as out:
        targs = transformers.TrainingArguments(
            output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=rec["batch_size"],
            per_device_eval_batch_size=rec["eval_batch_size"], learning_rate=opt["lr"], adam_beta1=opt["betas"][0],
            adam_beta2=opt["betas"][1], adam_epsilon=opt["eps"], weight_decay=opt["weight_decay"],
            lr_scheduler_type=sched["name"], warmup_steps=sched["warmup_steps"] or sched["warmup_ratio"],
            max_grad_norm=rec["max_grad_norm"], eval_strategy="epoch", save_strategy="no", logging_strategy="epoch",
            seed=seed, report_to=[], use_cpu=args.device == "cpu", bf16=args.device == "cuda", disable_tqdm=True,
            dataloader_num_workers=0,
        )  # fmt: skip
        trainer = transformers.Trainer(
            model=model, args=targs, train_dataset=train, eval_dataset=val, compute_metrics=accuracy,
            data_collator=transformers.DataCollatorWithPadding(tokenizer),
        )  # fmt: skip
        t0 = time.perf_counter()
        trainer.train()
        fit = time.perf_counter() - t0
        scores = {
            lang: trainer.evaluate(ds, metric_key_prefix="test")["test_acc"] for lang, ds in test.items()
        }
    result = {
        "runner": "transformers Trainer",
        "wall_s": round(time.perf_counter() - start, 1),
        "fit_s": round(fit, 1),
        "train_examples_per_s": round(epochs * len(train) / fit, 1),
        "test_acc": {lang: round(100 * v, 2) for lang, v in scores.items()},
        "threads": torch.get_num_threads(),
        "device": args.device,
        "seed": seed,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
