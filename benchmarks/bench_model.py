"""Throughput and memory of xmod-lab's X-MOD against transformers 5's, same weights, same process.

    .venv/bin/python benchmarks/bench_model.py --size tiny          # seconds; what CI runs
    .venv/bin/python benchmarks/bench_model.py --size base          # 12x768, 81 languages: minutes on 2 cores

Both models hold the SAME parameter tensors (transformers' model is built on the meta device and
``load_state_dict(assign=True)`` receives our Parameter objects), so a base-size run keeps one copy of the
853M weights; gradients are set to None before every step, so each model's optimizer only sees the
gradients its own backward produced. Each cell is timed interleaved (warm-up, then ours/theirs alternating)
and the median is reported, so load from other processes hits both sides alike.

Modes: ``pretrain`` = MLM forward + backward + AdamW, everything trainable; ``finetune`` = sequence
classification step under the paper's policy (embeddings, adapters, adapter LNs frozen); ``inference`` =
no_grad MLM forward. Memory is what a step needs on top of the weights: the optimizer state plus the
step's peak working set (CPU: VmHWM after resetting it through /proc/self/clear_refs, minus RSS before the
step; GPU: max_memory_allocated minus memory_allocated before the step).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from xmod_lab.models import (  # noqa: E402
    XMOD_LANGUAGES_81,
    XmodConfig,
    XmodForMaskedLM,
    XmodForSequenceClassification,
)

MODES = ("pretrain", "finetune", "inference")
BATCH_KINDS = ("one", "sorted8", "unsorted8", "sorted16", "unsorted16", "padded8")
# padded8: 8 languages interleaved, sentences of 12..seq tokens (uniform) right-padded to seq (~43% padding
# at seq 128), as real fine-tuning and evaluation batches are.
# Our config fields transformers' XmodConfig does not have.
_OUR_ONLY = ("adapter_layers", "adapter_activation", "adapter_mode", "attn_implementation", "architectures")
# Dense bf16 tensor-core peaks (FLOP/s) for the model FLOP utilisation column.
_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


# ------------------------------------------------------------------------------------------ setup
def model_config(size: str, languages: list[str]) -> XmodConfig:
    common = dict(
        languages=languages,
        adapter_reduction_factor=2,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        num_labels=3,
        attn_implementation="sdpa",
    )
    if size == "base":  # facebook/xmod-base
        return XmodConfig(
            vocab_size=250002,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            **common,
        )
    if size == "small":  # between the two: 6 x 384, where matmuls, not bookkeeping, take most of a step
        return XmodConfig(
            vocab_size=8000,
            hidden_size=384,
            num_hidden_layers=6,
            num_attention_heads=6,
            intermediate_size=1536,
            **common,
        )
    if size == "tiny":
        return XmodConfig(
            vocab_size=1000,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            **common,
        )
    raise ValueError(f"--size must be tiny, small or base, got {size!r}")


def _release_allocator_memory() -> None:
    # glibc keeps freed blocks below a growing mmap threshold in its heap; a fixed threshold returns big
    # tensors to the OS when freed, so RSS deltas measure what a step really needs.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD


def share_into(target: nn.Module, source_state: dict[str, torch.Tensor], device: torch.device) -> nn.Module:
    """Give a meta-built ``target`` the very Parameter objects of ``source_state`` (no copy).

    Keys the source lacks (a fresh head) get RoBERTa's init; buffers left on meta are rebuilt.
    """
    own = target.state_dict(keep_vars=True)
    state = {}
    for name, value in own.items():
        if name in source_state and source_state[name].shape == value.shape:
            state[name] = source_state[name]
        elif not value.is_floating_point():
            state[name] = torch.zeros(value.shape, dtype=value.dtype, device=device)
        elif name.endswith("bias"):
            state[name] = nn.Parameter(torch.zeros(value.shape, device=device))
        elif "norm" in name.lower():
            state[name] = nn.Parameter(torch.ones(value.shape, device=device))
        else:
            state[name] = nn.Parameter(torch.randn(value.shape, device=device) * 0.02)
    target.load_state_dict(state, assign=True)
    for module in target.modules():  # non-persistent buffers transformers creates (position_ids, ...)
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.is_meta:
                fill = (
                    torch.arange(buf.shape[-1]).expand(buf.shape)
                    if "position" in name
                    else torch.zeros(buf.shape)
                )
                module._buffers[name] = fill.to(dtype=buf.dtype, device=device).contiguous()
    left = [n for n, p in target.named_parameters() if p.is_meta]
    if left:
        raise RuntimeError(f"parameters left on the meta device: {left[:5]}")
    return target


def transformers_twin(ours: nn.Module, device: torch.device) -> nn.Module:
    """transformers' class of the same name holding our model's parameter tensors (SDPA attention)."""
    import transformers

    values = {k: v for k, v in ours.config.to_dict().items() if k not in _OUR_ONLY}
    hf_config = transformers.XmodConfig(**values)
    hf_config._attn_implementation = "sdpa"
    with torch.device("meta"):
        twin = getattr(transformers, type(ours).__name__)(hf_config)
    return share_into(twin, ours.state_dict(keep_vars=True), device)


def sibling(cls: type, config: XmodConfig, source: nn.Module, device: torch.device) -> nn.Module:
    """One of our classes (another head, or fewer languages) sharing ``source``'s tensors."""
    with torch.device("meta"):
        model = cls(config)
    return share_into(model, source.state_dict(keep_vars=True), device)


@dataclass
class Batch:
    kind: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lang_ids: torch.Tensor
    mlm_labels: torch.Tensor
    cls_labels: torch.Tensor

    @property
    def tokens(self) -> int:
        return self.input_ids.numel()

    @property
    def shape(self) -> str:
        return "x".join(map(str, self.input_ids.shape))

    def languages(self) -> int:
        return len(set(self.lang_ids.tolist()))


def make_batch(
    kind: str, batch: int, seq: int, config: XmodConfig, device: torch.device, seed: int = 0
) -> Batch:
    """``one``: one language; ``sortedK``/``unsortedK``: K languages, rows grouped or interleaved.

    A K-language batch needs K rows: with fewer, it becomes K x (batch*seq/K) tokens, same token count.
    """
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    k = 1 if kind == "one" else int(kind.removeprefix("unsorted").removeprefix("sorted").removeprefix("padded"))
    k = min(k, len(config.languages))
    rows = max(batch, k)
    length = max(8, batch * seq // rows)
    langs = rng.sample(range(len(config.languages)), k)
    ids = [langs[i % k] for i in range(rows)]
    if kind.startswith("sorted"):
        ids.sort()
    elif kind.startswith("unsorted"):  # interleaved, never two equal neighbours: the worst case for runs
        ids = [langs[i % k] for i in range(rows)]
    input_ids = torch.randint(5, config.vocab_size, (rows, length), generator=g)
    input_ids[:, 0], input_ids[:, -1] = 0, 2  # <s> ... </s>
    mask = torch.ones_like(input_ids)
    if kind.startswith("padded"):
        mask = padded_mask(rows, length, min(12, length), g)
        input_ids = input_ids.masked_fill(mask == 0, config.pad_token_id)
    chosen = (torch.rand(rows, length, generator=g) < 0.15) & (mask == 1)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return Batch(
        kind=kind,
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        lang_ids=torch.tensor(ids, dtype=torch.long).to(device),
        mlm_labels=labels.to(device),
        cls_labels=torch.randint(0, config.num_labels, (rows,), generator=g).to(device),
    )


def padded_mask(rows: int, length: int, shortest: int, g: torch.Generator, fraction: float | None = None) -> torch.Tensor:
    """(rows, length) right-padding mask: lengths uniform in shortest..length, or all rows padded by ``fraction``."""
    if fraction is None:
        lengths = torch.randint(shortest, length + 1, (rows,), generator=g)
    else:
        lengths = torch.full((rows,), max(1, round(length * (1 - fraction))))
    return (torch.arange(length)[None, :] < lengths[:, None]).long()


# ------------------------------------------------------------------------------------ measurement
class Memory:
    """Peak memory of one call over what was allocated before it."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.proc = Path("/proc/self/clear_refs").exists() and not self.cuda

    @staticmethod
    def _status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        return 0

    def start(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        if self.proc:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            return self._status("VmRSS")
        return 0

    def peak_since(self, base: int) -> int:
        if self.cuda:
            return torch.cuda.max_memory_allocated() - base
        if self.proc:
            return self._status("VmHWM") - base
        return 0


def optimizer_bytes(opt: torch.optim.Optimizer | None) -> int:
    if opt is None:
        return 0
    return sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )


@dataclass
class Runner:
    """One model in one mode: a callable step, its optimizer, its timings and peaks."""

    name: str
    model: nn.Module
    mode: str
    autocast: torch.dtype | None
    opt: torch.optim.Optimizer | None = None
    step_fn: Callable[[Batch], None] | None = None
    lean: bool = False  # park the optimizer state between steps (see park())
    extra: dict = field(default_factory=dict)  # more forward kwargs (masked_logits_only)
    times: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    state_bytes: int = 0

    def __post_init__(self) -> None:
        self.step_fn = self._build()

    def park(self) -> None:
        """Free the AdamW moments while the other model runs; unpark() re-creates them as zeros.

        At base size two full AdamW states (transformers' covers all 853M parameters: 6.8 GB) plus the
        shared weights, transformers' full gradients and the 250k-vocabulary logits do not fit in 24 GB.
        A step's cost does not depend on the moments' values, only on which parameters have them, and the
        zeros are written (so resident) before the timer starts.
        """
        if not (self.lean and self.opt):
            return
        for state in self.opt.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key] = torch.empty(0)

    def unpark(self) -> None:
        if not (self.lean and self.opt):
            return
        for param, state in self.opt.state.items():
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state and state[key].numel() != param.numel():
                    state[key] = torch.zeros_like(param, memory_format=torch.preserve_format)

    def _autocast(self, device: torch.device):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast)

    def _build(self) -> Callable[[Batch], None]:
        model = self.model
        forward = getattr(model, "_compiled_forward", model)
        if self.mode == "inference":
            model.eval()

            def infer(b: Batch) -> None:
                with torch.no_grad(), self._autocast(b.input_ids.device):
                    forward(input_ids=b.input_ids, attention_mask=b.attention_mask, lang_ids=b.lang_ids)

            return infer
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
        labels = "mlm_labels" if self.mode == "pretrain" else "cls_labels"

        def train(b: Batch) -> None:
            model.zero_grad(set_to_none=True)  # shared tensors: the other model's grads must not leak in
            with self._autocast(b.input_ids.device):
                out = forward(
                    input_ids=b.input_ids,
                    attention_mask=b.attention_mask,
                    lang_ids=b.lang_ids,
                    labels=getattr(b, labels),
                    **self.extra,
                )
            out.loss.backward()
            self.opt.step()
            model.zero_grad(set_to_none=True)

        return train

    def run(self, batch: Batch, memory: Memory, record: bool) -> None:
        self.unpark()
        base = memory.start()
        t0 = time.perf_counter()
        self.step_fn(batch)
        if memory.cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        peak = memory.peak_since(base)
        self.state_bytes = optimizer_bytes(self.opt)
        self.park()
        if record:
            self.times.append(elapsed)
            self.peaks.append(peak)

    def reset(self) -> None:
        self.times, self.peaks = [], []

    def median(self) -> float:
        return statistics.median(self.times)

    def memory(self) -> int:
        return self.state_bytes + max(self.peaks)


def interleaved(runners: list[Runner], batch: Batch, memory: Memory, warmup: int, steps: int) -> None:
    for r in runners:
        r.reset()
    for _ in range(warmup):
        for r in runners:
            r.run(batch, memory, record=False)
    for i in range(steps):  # alternate who goes first, so neither always follows the other's frees
        for r in runners if i % 2 == 0 else runners[::-1]:
            r.run(batch, memory, record=True)


def model_flops(config: XmodConfig, batch: Batch, mode: str) -> float:
    """Analytic matmul FLOPs of one step: 2 per multiply-add, x3 with backward; attention included."""
    d, f, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    r = config.adapter_bottleneck_size
    rows, length = batch.input_ids.shape
    per_token = n * (4 * d * d + 2 * d * f + 2 * d * r + 2 * length * d)  # projections, FFN, adapter, QK+PV
    if mode == "finetune":
        head = d * d / length + d * config.num_labels / length  # the classifier reads one token per row
    else:
        head = d * d + d * config.vocab_size
    forward = 2 * (per_token + head) * rows * length
    return forward if mode == "inference" else 3 * forward


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in _PEAK_BF16.items() if k in name), None)


# ---------------------------------------------------------------------------------------- report
@dataclass
class Row:
    section: str
    mode: str
    batch: str
    shape: str
    langs: int
    a_name: str
    a_tps: float
    b_name: str
    b_tps: float
    a_mem: int
    b_mem: int
    a_mfu: float | None = None
    b_mfu: float | None = None

    @property
    def ratio(self) -> float:
        return self.a_tps / self.b_tps


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def table_header(gpu: bool) -> str:
    head = (
        f"| {'section':<9} | {'mode':<9} | {'batch':<10} | {'shape':<6} | langs | {'A':<10} | {'A tok/s':>9} | "
        f"{'B':<12} | {'B tok/s':>9} | {'A/B':>5} | {'A MB':>7} | {'B MB':>7} |"
    )
    if gpu:
        head += " A MFU | B MFU |"
    rule = "|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|"
    return head + "\n" + rule


def table_row(r: Row, gpu: bool) -> str:
    line = (
        f"| {r.section:<9} | {r.mode:<9} | {r.batch:<10} | {r.shape:<6} | {r.langs:>5} | {r.a_name:<10} | "
        f"{r.a_tps:>9,.0f} | {r.b_name:<12} | {r.b_tps:>9,.0f} | {r.ratio:>5.2f} | {_mb(r.a_mem):>7} | "
        f"{_mb(r.b_mem):>7} |"
    )
    if gpu:
        line += f" {r.a_mfu or 0:5.1%} | {r.b_mfu or 0:5.1%} |"
    return line


def compare(
    section: str,
    mode: str,
    batch: Batch,
    a: Runner,
    b: Runner,
    config: XmodConfig,
    peak: float | None,
    memory: Memory,
    args: argparse.Namespace,
) -> Row:
    interleaved([a, b], batch, memory, args.warmup, args.steps)
    flops = model_flops(config, batch, mode)
    row = Row(
        section,
        mode,
        batch.kind,
        batch.shape,
        batch.languages(),
        a.name,
        batch.tokens / a.median(),
        b.name,
        batch.tokens / b.median(),
        a.memory(),
        b.memory(),
    )
    if peak:
        row.a_mfu, row.b_mfu = flops / a.median() / peak, flops / b.median() / peak
    return row


@contextlib.contextmanager
def policy(models: list[nn.Module], mode: str) -> Iterator[None]:
    """requires_grad for the mode; the models share tensors, so one call sets it for all of them."""
    for m in models:
        for p in m.parameters():
            p.requires_grad_(True)
    if mode == "finetune":
        for m in models:
            m.freeze_embeddings_and_language_adapters()
    yield
    for m in models:
        for p in m.parameters():
            p.requires_grad_(True)


def check_same_outputs(ours: nn.Module, theirs: nn.Module, batch: Batch) -> float:
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        a = ours(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, lang_ids=batch.lang_ids
        ).logits
        b = theirs(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, lang_ids=batch.lang_ids
        ).logits
    real = batch.attention_mask.bool()  # skipped padding positions hold no computed output
    diff = (a[real].float() - b[real].float()).abs().max().item()
    if not diff < 1e-3:
        raise RuntimeError(f"ours and transformers disagree by {diff:g} on the same weights: not comparable")
    return diff


# ------------------------------------------------------------------------------------ data section
def data_throughput(seq: int, batch: int, seconds: float = 2.0) -> float:
    """Examples/s of tokenize + MLM collate (xmod_lab.data) on synthetic sentences, one process."""
    import tempfile

    from xmod_lab.data.collate import MaskedLMCollator
    from xmod_lab.data.synthetic import corpus_line, make_language
    from xmod_lab.data.tokenizer import train_tokenizer

    rng = random.Random(0)
    lines = []
    for lang in ("en_XX", "de_DE", "sw_KE", "fi_FI"):
        language = make_language(lang, seed=1)
        lines += [" ".join(corpus_line(rng, language) for _ in range(6)) for _ in range(300)]
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_tokenizer(lines, vocab_size=800, save_dir=tmp)
    collate = MaskedLMCollator(
        tok.pad_token_id,
        tok.mask_token_id,
        len(tok),
        tok.all_special_ids,
        generator=torch.Generator().manual_seed(0),
    )
    done, t0, i = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        texts = [lines[(i + j) % len(lines)] for j in range(batch)]
        enc = tok(texts, truncation=True, max_length=seq)
        collate([{"input_ids": ids, "lang_ids": j % 4} for j, ids in enumerate(enc["input_ids"])])
        done += batch
        i += batch
    return done / (time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--size", choices=("tiny", "small", "base"), default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="float32, or autocast to bf16/fp16 (weights stay fp32)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed repetitions per cell, median reported (default: tiny 10, base 3)",
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed repetitions per cell (default: tiny 2, base 1)"
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--compile", action="store_true", help="torch.compile both models (fullgraph=False)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument(
        "--mlm-logits",
        choices=("all", "masked", "both"),
        default="both",
        help="pre-training vs transformers: our LM head on all tokens (same work as theirs), only on "
        "the masked ones (masked_logits_only=True), or both rows",
    )
    p.add_argument("--batches", default=",".join(BATCH_KINDS))
    p.add_argument(
        "--sections",
        default="transformers,languages,variants,padding,data",
        help="transformers: ours vs transformers 5; languages: our 81- vs 1-language model; "
        "variants: SDPA vs eager, gradient checkpointing, inference's linears through oneDNN or not; "
        "padding: our model skipping padding or not, by "
        "padding fraction; data: tokenize+collate vs training step",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: tiny 1, since thread "
        "hand-offs cost more than its maths on a shared machine; base: torch's default)",
    )
    p.add_argument(
        "--lean",
        choices=("auto", "on", "off"),
        default="auto",
        help="free each optimizer's moments while the other model runs (auto: on at base size on CPU)",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU when not detected")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    tiny = args.size == "tiny"
    args.steps = args.steps if args.steps is not None else (10 if tiny else 3)
    args.warmup = args.warmup if args.warmup is not None else (2 if tiny else 1)
    args.threads = args.threads if args.threads is not None else (1 if tiny else 0)
    args.lean = args.lean == "on" or (args.lean == "auto" and not tiny and not args.device.startswith("cuda"))
    for name in ("modes", "batches", "sections"):
        setattr(args, name, [x for x in getattr(args, name).split(",") if x])
    bad = [m for m in args.modes if m not in MODES] + [b for b in args.batches if b not in BATCH_KINDS]
    if bad:
        p.error(f"unknown modes/batches {bad}; modes: {MODES}, batches: {BATCH_KINDS}")
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    _release_allocator_memory()
    with contextlib.suppress(OSError):  # if memory runs out anyway, the kernel should pick this process
        Path("/proc/self/oom_score_adj").write_text("1000")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    autocast = None if args.dtype == "float32" else getattr(torch, args.dtype)
    memory = Memory(device)
    peak = peak_flops(device, args.peak_tflops)
    gpu = peak is not None
    import transformers

    print(f"# xmod-lab model benchmark, {datetime.datetime.now().isoformat(timespec='minutes')}")
    print(
        f"# torch {torch.__version__}, transformers {transformers.__version__}, {platform.processor() or ''} "
        f"{device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})"
        f", size={args.size}, dtype={args.dtype}, compile={args.compile}, warmup={args.warmup}, "
        f"steps={args.steps} (medians), batch={args.batch}x{args.seq}, lean optimizer={args.lean}"
    )

    languages = list(XMOD_LANGUAGES_81)
    config = model_config(args.size, languages)
    t0 = time.perf_counter()
    with torch.device(device):
        mlm = XmodForMaskedLM(config)
    params = sum(p.numel() for p in mlm.parameters())
    adapters = sum(p.numel() for n, p in mlm.named_parameters() if "adapter_modules" in n)
    print(
        f"# model: {params / 1e6:,.1f}M parameters ({adapters / 1e6:,.1f}M in {len(languages)} languages' "
        f"adapters), built in {time.perf_counter() - t0:.1f}s; transformers' twins share its tensors"
    )
    cls = sibling(XmodForSequenceClassification, config, mlm, device)
    models = {"pretrain": mlm, "inference": mlm, "finetune": cls}
    batches = {k: make_batch(k, args.batch, args.seq, config, device, args.seed) for k in args.batches}
    rows: list[Row] = []

    def maybe_compile(m: nn.Module) -> nn.Module:
        if args.compile:
            m.__dict__["_compiled_forward"] = torch.compile(m)  # not a submodule: no cycle
        return m

    for m in set(models.values()):
        maybe_compile(m)
    print(table_header(gpu), flush=True)

    if "transformers" in args.sections:
        twins = {"pretrain": transformers_twin(mlm, device), "finetune": transformers_twin(cls, device)}
        twins["inference"] = twins["pretrain"]
        for m in twins.values():
            maybe_compile(m)
        probe = batches.get("unsorted8") or next(iter(batches.values()))
        print(
            f"# same weights: max |logits ours - transformers| = {check_same_outputs(mlm, twins['pretrain'], probe):.2e}"
        )
        for mode in args.modes:
            with policy([models[mode], twins[mode]], mode):
                theirs = Runner("transformers", twins[mode], mode, autocast, lean=args.lean)
                variants = [("vs-hf", Runner("ours", models[mode], mode, autocast, lean=args.lean))]
                if mode == "pretrain":  # the LM head only where labels are (fairseq's way), an opt-in of ours
                    masked = Runner(
                        "ours-mask",
                        models[mode],
                        mode,
                        autocast,
                        lean=args.lean,
                        extra={"masked_logits_only": True},
                    )
                    variants = {
                        "all": variants,
                        "masked": [("vs-hf-mlm", masked)],
                        "both": [*variants, ("vs-hf-mlm", masked)],
                    }[args.mlm_logits]
                for batch in batches.values():
                    for section, ours in variants:
                        try:
                            rows.append(
                                compare(section, mode, batch, ours, theirs, config, peak, memory, args)
                            )
                        except RuntimeError as err:  # e.g. 5.23 under CPU bf16 autocast: fp32/bf16 index_put
                            print(
                                f"# transformers fails ({mode}, {batch.kind}, {args.dtype}): {str(err)[:160]}"
                            )
                            continue
                        print(table_row(rows[-1], gpu), flush=True)
                del ours, theirs, variants
                gc.collect()
        del twins
        gc.collect()

    if "languages" in args.sections:
        one_config = model_config(args.size, [languages[0]])
        single = {
            "pretrain": sibling(XmodForMaskedLM, one_config, mlm, device),
            "finetune": sibling(XmodForSequenceClassification, one_config, cls, device),
        }
        single["inference"] = single["pretrain"]
        for m in set(single.values()):
            maybe_compile(m)
        mixed = [k for k in args.batches if k != "one"] or args.batches
        for mode in args.modes:
            with policy([models[mode], single[mode]], mode):
                many = Runner("81 langs", models[mode], mode, autocast, lean=args.lean)
                one = Runner("1 lang", single[mode], mode, autocast, lean=args.lean)
                for kind in mixed:
                    b = batches[kind]
                    # The 1-language model reads the same tokens with every row routed to its one adapter.
                    one_batch = Batch(
                        b.kind,
                        b.input_ids,
                        b.attention_mask,
                        torch.zeros_like(b.lang_ids),
                        b.mlm_labels,
                        b.cls_labels,
                    )
                    interleaved_pair(many, b, one, one_batch, memory, args)
                    row = Row(
                        "81-vs-1",
                        mode,
                        b.kind,
                        b.shape,
                        b.languages(),
                        many.name,
                        b.tokens / many.median(),
                        one.name,
                        b.tokens / one.median(),
                        many.memory(),
                        one.memory(),
                    )
                    rows.append(row)
                    print(table_row(row, gpu), flush=True)
                del many, one
                gc.collect()
        del single
        gc.collect()

    if "variants" in args.sections:
        kind = "unsorted8" if "unsorted8" in batches else next(iter(batches))
        b = batches[kind]
        for mode in [m for m in ("pretrain", "inference") if m in args.modes]:
            with policy([mlm], mode):
                sdpa = Runner("sdpa", mlm, mode, autocast, lean=args.lean)
                eager = Runner("eager", mlm, mode, autocast, lean=args.lean)
                sdpa.step_fn, eager.step_fn = (
                    _with_attention(sdpa.step_fn, mlm, True),
                    _with_attention(eager.step_fn, mlm, False),
                )
                eager.opt = sdpa.opt  # one optimizer state: they are the same model
                row = compare("attention", mode, b, sdpa, eager, config, peak, memory, args)
                eager.opt = None
                rows.append(row)
                print(table_row(row, gpu), flush=True)
                del sdpa, eager
                gc.collect()
        if "inference" in args.modes:  # linear layers through oneDNN (kernels.py) or torch's default matmul
            with policy([mlm], "inference"):
                for b in batches.values():
                    onednn = Runner("oneDNN", mlm, "inference", autocast, lean=args.lean)
                    default = Runner("MKL", mlm, "inference", autocast, lean=args.lean)
                    onednn.step_fn = _with_onednn(onednn.step_fn, True)
                    default.step_fn = _with_onednn(default.step_fn, False)
                    row = compare("kernels", "inference", b, onednn, default, config, peak, memory, args)
                    rows.append(row)
                    print(table_row(row, gpu), flush=True)
                    del onednn, default
                    gc.collect()
        if "pretrain" in args.modes:
            with policy([mlm], "pretrain"):
                plain = Runner("no ckpt", mlm, "pretrain", autocast, lean=args.lean)
                ckpt = Runner("checkpoint", mlm, "pretrain", autocast, lean=args.lean)
                plain.step_fn = _with_checkpointing(plain.step_fn, mlm, False)
                ckpt.step_fn = _with_checkpointing(ckpt.step_fn, mlm, True)
                ckpt.opt = plain.opt
                row = compare("ckpt", "pretrain", b, plain, ckpt, config, peak, memory, args)
                ckpt.opt = None
                rows.append(row)
                print(table_row(row, gpu), flush=True)
                del plain, ckpt
                gc.collect()

    if "padding" in args.sections:
        rows += skip_padding_rows(models, config, device, autocast, memory, peak, gpu, args)

    data_line = None
    if "data" in args.sections:
        data_batch = 32
        per_s = data_throughput(args.seq, data_batch)
        data_line = (
            f"tokenize + MLM collate: {per_s:,.0f} examples/s (1 process, batch {data_batch}, "
            f"<= {args.seq} tokens)"
        )
        tiny = rows_for(rows, "vs-hf", "pretrain")
        if args.size == "tiny" and tiny:
            step_examples = tiny.a_tps / batches[tiny.batch].input_ids.shape[1]
            data_line += (
                f"; tiny model's pre-training step consumes {step_examples:,.0f} examples/s -> "
                f"{per_s / step_examples:.1f}x (target >= 10x)"
            )
        else:
            data_line += "; run --size tiny to compare with the tiny model's training step"

    print()
    print(table_header(gpu))
    for row in rows:
        print(table_row(row, gpu))
    print(
        "# A/B > 1: A is faster. MB: optimizer state + the step's peak working set over the shared weights."
    )
    print_targets(rows, data_line)
    return rows


def print_targets(rows: list[Row], data_line: str | None) -> None:
    """The issue's targets, read off this run's rows."""
    print("# targets (this run):")
    checks = [
        ("vs-hf", "pretrain", "MLM pre-training step, unsorted 8 languages, ours/transformers", 1.6),
        ("vs-hf-mlm", "pretrain", "same, our LM head on masked tokens only (opt-in), ours/transformers", 1.6),
        (
            "vs-hf",
            "finetune",
            "fine-tuning step (paper's policy), unsorted 8 languages, ours/transformers",
            1.05,
        ),
        ("81-vs-1", "pretrain", "81-language / 1-language model, MLM step, same mixed batch", 0.95),
        ("81-vs-1", "finetune", "81-language / 1-language model, fine-tuning step, same mixed batch", 0.95),
        ("81-vs-1", "inference", "81-language / 1-language model, inference, same mixed batch", 0.95),
    ]
    for section, mode, text, target in checks:
        row = rows_for(rows, section, mode)
        if row is not None:
            verdict = "met" if row.ratio >= target else "NOT met"
            print(f"#   {text}: {row.ratio:.2f}x (target >= {target}) {verdict} [{row.batch}]")
    # RSS is read in pages and the interpreter allocates a little on its own: 1 MiB / 2% count as equal.
    over = [
        f"{r.mode}/{r.batch}"
        for r in rows
        if r.section.startswith("vs-hf") and r.a_mem > max(r.b_mem * 1.02, r.b_mem + 2**20)
    ]
    if any(r.section == "vs-hf" for r in rows):
        print(
            f"#   peak memory never above transformers': {'met' if not over else 'NOT met: ' + ', '.join(over)}"
        )
    if data_line:
        print(f"#   {data_line}")


def rows_for(rows: list[Row], section: str, mode: str) -> Row | None:
    wanted = [r for r in rows if r.section == section and r.mode == mode]
    by_kind = {r.batch: r for r in wanted}
    return by_kind.get("unsorted8") or (wanted[0] if wanted else None)


def interleaved_pair(
    a: Runner, a_batch: Batch, b: Runner, b_batch: Batch, memory: Memory, args: argparse.Namespace
) -> None:
    a.reset()
    b.reset()
    for _ in range(args.warmup):
        a.run(a_batch, memory, record=False)
        b.run(b_batch, memory, record=False)
    for i in range(args.steps):
        order = [(a, a_batch), (b, b_batch)]
        for r, batch in order if i % 2 == 0 else order[::-1]:
            r.run(batch, memory, record=True)


PADDING_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.43)


def skip_padding_rows(
    models: dict[str, nn.Module],
    config: XmodConfig,
    device: torch.device,
    autocast: torch.dtype | None,
    memory: Memory,
    peak: float | None,
    gpu: bool,
    args: argparse.Namespace,
) -> list[Row]:
    """Our model with padding skipped (A) vs not (B), same batch, by padding fraction: where skipping pays
    (the threshold of skip_padding="auto", xmod_lab/models/padding.py)."""
    out = []
    for mode in args.modes:
        model = models[mode]
        for fraction in PADDING_FRACTIONS:
            b = make_batch("unsorted8", args.batch, args.seq, config, device, args.seed)
            g = torch.Generator().manual_seed(args.seed)
            mask = padded_mask(*b.input_ids.shape, 1, g, fraction).to(device)
            b = Batch(f"pad{round(100 * padding_of_mask(mask)):02d}", b.input_ids.masked_fill(mask == 0, config.pad_token_id),
                      mask, b.lang_ids, b.mlm_labels.masked_fill(mask == 0, -100), b.cls_labels)  # fmt: skip
            with policy([model], mode):
                skip = Runner("skip", model, mode, autocast, lean=args.lean)
                keep = Runner("no skip", model, mode, autocast, lean=args.lean)
                skip.step_fn = _with_skip_padding(skip.step_fn, model, "always")
                keep.step_fn = _with_skip_padding(keep.step_fn, model, "never")
                keep.opt = skip.opt  # one model, one optimizer state
                row = compare("skip-pad", mode, b, skip, keep, config, peak, memory, args)
                keep.opt = None
                out.append(row)
                print(table_row(row, gpu), flush=True)
                del skip, keep
                gc.collect()
    return out


def padding_of_mask(mask: torch.Tensor) -> float:
    return 1.0 - mask.float().mean().item()


def _with_skip_padding(step: Callable[[Batch], None], model: nn.Module, mode: str) -> Callable[[Batch], None]:
    def run(b: Batch) -> None:
        before = model.config.skip_padding
        model.config.skip_padding = mode
        try:
            step(b)
        finally:
            model.config.skip_padding = before

    return run


def _with_attention(step: Callable[[Batch], None], model: nn.Module, sdpa: bool) -> Callable[[Batch], None]:
    def run(b: Batch) -> None:
        for layer in model.roberta.encoder.layer:
            layer.attention.self.use_sdpa = sdpa
        try:
            step(b)
        finally:
            for layer in model.roberta.encoder.layer:
                layer.attention.self.use_sdpa = True

    return run


def _with_onednn(step: Callable[[Batch], None], on: bool) -> Callable[[Batch], None]:
    def run(b: Batch) -> None:
        with torch.backends.mkldnn.flags(enabled=on):  # kernels.py's switch: off = torch's default matmul
            step(b)

    return run


def _with_checkpointing(step: Callable[[Batch], None], model: nn.Module, on: bool) -> Callable[[Batch], None]:
    def run(b: Batch) -> None:
        model.gradient_checkpointing_enable() if on else model.gradient_checkpointing_disable()
        try:
            step(b)
        finally:
            model.gradient_checkpointing_disable()

    return run


if __name__ == "__main__":
    main()
