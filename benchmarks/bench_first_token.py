"""Our fine-tuning step (paper's policy) with the last layer on <s> only (A) vs on every token (B): same model,
same dense batch (8 languages), interleaved, medians.

    .venv/bin/python benchmarks/bench_first_token.py SIZE BATCH SEQ STEPS [THREADS]   # e.g. tiny 32 128 9 1
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_model import make_batch, model_config  # noqa: E402

from xmod_lab.models import XMOD_LANGUAGES_81, XmodForSequenceClassification  # noqa: E402

torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 1)
torch.manual_seed(0)
size, batch, seq, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
config = model_config(size, list(XMOD_LANGUAGES_81))
model = XmodForSequenceClassification(config).train()
model.freeze_embeddings_and_language_adapters()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
b = make_batch("unsorted8", batch, seq, config, torch.device("cpu"))
roberta_forward = model.roberta.forward


def every_token(*args, **kwargs):
    return roberta_forward(*args, **{**kwargs, "first_token_only": False})


def step(first: bool) -> float:
    model.roberta.forward = roberta_forward if first else every_token
    t = time.perf_counter()
    out = model(
        input_ids=b.input_ids, attention_mask=b.attention_mask, lang_ids=b.lang_ids, labels=b.cls_labels
    )
    out.loss.backward()
    opt.step()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


step(True)
step(False)
times = {True: [], False: []}
for i in range(steps):
    for first in (True, False) if i % 2 == 0 else (False, True):
        times[first].append(step(first))
a, bb = statistics.median(times[True]), statistics.median(times[False])
print(
    f"{size} {batch}x{seq}: last layer on <s> only {a:.3f} s, on every token {bb:.3f} s, "
    f"ratio {bb / a:.2f}x (medians of {steps})"
)
