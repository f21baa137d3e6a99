"""The default fine-tuning job written as a plain transformers Trainer script: the baseline that
`make bench`'s end-to-end section runs beside `xmod-train pretrain=none freeze=none` (bench_e2e.py).

Same files (the synthetic NLI data and tokenizer `xmod-train` generates under outputs/.cache), same model
(transformers' XmodForSequenceClassification at model=tiny's sizes, the 5 synthetic languages' adapters),
same recipe (conf/train.yaml: AdamW lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01 off biases and
LayerNorms, linear decay, no warm-up, gradient clipping 1.0, batch 32, 10 epochs, seed 42; evaluation on the
5 validation sets every epoch and on the 5 test sets at the end). Prints one JSON line.

    .venv/bin/python benchmarks/trainer_nli.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from xmod_lab.data.languages import to_xmod_language  # noqa: E402
from xmod_lab.data.synthetic import SYNTHETIC_LANGUAGE_MAP, prepare_synthetic  # noqa: E402
from xmod_lab.data.tokenizer import load_tokenizer  # noqa: E402

LANGS = ("en", "de", "fr", "ru", "zh")


def read_split(folder: Path, lang: str, split: str, tokenizer, lang_id: int, max_length: int):
    import datasets

    rows = [json.loads(line) for line in (folder / "xnli" / lang / f"{split}.jsonl").read_text().splitlines()]
    enc = tokenizer([r["premise"] for r in rows], [r["hypothesis"] for r in rows], truncation=True,
                    max_length=max_length)  # fmt: skip
    return datasets.Dataset.from_dict(
        {**enc, "labels": [int(r["label"]) for r in rows], "lang_ids": [lang_id] * len(rows)}
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=os.environ.get("XMOD_CACHE", "outputs/.cache") + "/synthetic")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-length", type=int, default=64)
    args = p.parse_args(argv)
    import transformers

    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    transformers.set_seed(42)
    folder = prepare_synthetic(args.root, vocab_size=1000, n_train=4000, n_eval=500, n_corpus=4000, seed=0)
    tokenizer = load_tokenizer(str(folder / "tokenizer"))
    adapters = [to_xmod_language(lang, SYNTHETIC_LANGUAGE_MAP) for lang in LANGS]
    train = read_split(folder, "en", "train", tokenizer, 0, args.max_length)
    val = {
        lang: read_split(folder, lang, "validation", tokenizer, i, args.max_length)
        for i, lang in enumerate(LANGS)
    }
    test = {
        lang: read_split(folder, lang, "test", tokenizer, i, args.max_length) for i, lang in enumerate(LANGS)
    }
    config = transformers.XmodConfig(
        vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, languages=adapters, num_labels=3, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = transformers.XmodForSequenceClassification(config)

    def accuracy(pred) -> dict:
        return {"acc": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    with tempfile.TemporaryDirectory() as out:
        targs = transformers.TrainingArguments(
            output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=32,
            per_device_eval_batch_size=128, learning_rate=1e-3, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
            weight_decay=0.01, lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0, eval_strategy="epoch",
            save_strategy="no", logging_strategy="epoch", seed=42, report_to=[], use_cpu=True, disable_tqdm=True,
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
        "train_examples_per_s": round(args.epochs * len(train) / fit, 1),
        "test_acc": {lang: round(100 * v, 2) for lang, v in scores.items()},
        "threads": args.threads,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
