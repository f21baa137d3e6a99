"""The LM head's decoder through oneDNN at inference (xmod_lab/models/kernels.py): the module's numbers, and the
module's own path wherever calling the op is not what ``module(x)`` would do."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import xmod_lab.models as xm
from xmod_lab.models import kernels

from .helpers import max_diff, tiny_config, token_batch

pytestmark = pytest.mark.skipif(kernels._OP is None, reason="no oneDNN linear in this torch build / CPU")
LANG_IDS = torch.tensor([0, 1, 2, 3])
TOL = 1e-5


@pytest.fixture
def calls(monkeypatch) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, weight shape) of every call of the oneDNN op."""
    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    op = kernels._OP

    def recording(x, weight, *args):
        seen.append((tuple(x.shape), tuple(weight.shape)))
        return op(x, weight, *args)

    monkeypatch.setattr(kernels, "_OP", recording)
    return seen


def decoder_inputs(calls, vocab: int) -> list[tuple[int, ...]]:
    return [x for x, weight in calls if weight[0] == vocab]


def test_masked_lm_inference_runs_its_linear_layers_through_onednn_with_the_modules_numbers(calls):
    config = tiny_config(vocab_size=3000, hidden_size=64, intermediate_size=128)
    model = xm.XmodForMaskedLM(config).eval()
    ids = torch.randint(3, 3000, (4, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast = model(ids, lang_ids=LANG_IDS).logits
        # per layer: query, key, value, attention output, FFN in and out, and both halves of each of the 4
        # rows' adapters; then the head's dense and decoder
        assert len(calls) == config.num_hidden_layers * (6 + 2 * 4) + 2
        assert decoder_inputs(calls, 3000) == [(4, 9, 64)]
        with torch.backends.mkldnn.flags(enabled=False):  # the switch: torch's own matmul
            plain = model(ids, lang_ids=LANG_IDS).logits
    assert len(calls) == config.num_hidden_layers * (6 + 2 * 4) + 2
    assert fast.shape == plain.shape == (4, 9, 3000) and fast.is_contiguous() and max_diff(fast, plain) <= TOL
    calls.clear()
    model.train()  # training records a graph: the modules' path, and gradients reach every layer
    out = model(ids, lang_ids=LANG_IDS, labels=ids)
    out.loss.backward()
    assert calls == [] and model.lm_head.decoder.weight.grad is not None
    assert model.roberta.encoder.layer[0].attention.self.query.weight.grad is not None


@pytest.mark.parametrize("pad_rows", [(1, 3), (0, 1, 2, 3)], ids=["mostly-real", "mostly-padding"])
def test_padded_inference_decodes_every_row_unless_most_are_padding(calls, pad_rows):
    """With padding skipped, the skipped positions hold zeros, so decoding every row through oneDNN gives the
    kept-rows path's logits; it is chosen while at least half of the positions are kept."""
    ids, mask = token_batch(batch=4, length=9, pad_rows=pad_rows)
    if len(pad_rows) == 4:  # leave two real tokens per row: 8 of 36 kept
        ids[:, 2:], mask[:, 2:] = 1, 0
    model = xm.XmodForMaskedLM(tiny_config(skip_padding="always")).eval()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, lang_ids=LANG_IDS).logits
        decoded = decoder_inputs(calls, model.config.vocab_size)
        with torch.backends.mkldnn.flags(enabled=False):
            runs = model(ids, attention_mask=mask, lang_ids=LANG_IDS).logits
    kept = int(mask.sum())
    assert decoded == ([(4, 9, 32)] if 2 * kept >= mask.numel() else [(1, 32)])  # every row, or the zero state
    assert max_diff(out, runs) <= TOL  # real and skipped positions alike


class Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


class Functions(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


def _plain() -> tuple[nn.Linear, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(64, 300), torch.randn(5, 64)


def test_a_plain_linear_without_a_graph_goes_through_onednn(calls):
    layer, x = _plain()
    with torch.no_grad():
        y = kernels.linear(layer, x)
    assert calls == [((5, 64), (300, 64))] and max_diff(y, torch.nn.functional.linear(x, layer.weight, layer.bias)) <= TOL
    with torch.inference_mode():
        kernels.linear(nn.Linear(64, 300, bias=False), x)
    assert len(calls) == 2


def test_where_the_op_is_not_what_module_x_would_do_the_module_runs(calls):
    layer, x = _plain()
    y = kernels.linear(layer, x)  # a graph is recorded
    assert y.requires_grad
    seen = []
    hook = layer.register_forward_hook(lambda *_: seen.append(1))
    with torch.no_grad():
        kernels.linear(layer, x)
    hook.remove()
    assert seen == [1]  # hooks see their call

    class Scaled(nn.Linear):  # a subclass (LoRA, quantized layers) has its own forward
        def forward(self, x):
            return 2 * super().forward(x)

    scaled = Scaled(64, 300)
    scaled.load_state_dict(layer.state_dict())
    with torch.no_grad():
        assert max_diff(kernels.linear(scaled, x), 2 * layer(x)) <= TOL
        assert kernels.linear(layer.to(torch.bfloat16), x.bfloat16()).dtype == torch.bfloat16
        layer.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert kernels.linear(layer, x).dtype == torch.bfloat16  # what autocast makes of module(x)
        with FlopCounterMode(display=False) as flops:
            kernels.linear(layer, x)
        assert flops.get_total_flops() == 2 * 5 * 64 * 300  # a FLOP counter sees the matmul
        with Ops() as ops:
            kernels.linear(layer, x)
        assert torch.ops.aten.addmm.default in ops.seen  # so does any dispatch mode (tracing, fake tensors)
        with Functions() as functions:
            kernels.linear(layer, x)
        assert torch.nn.functional.linear in functions.seen
        with torch.backends.mkldnn.flags(enabled=False):
            kernels.linear(layer, x)
        assert kernels.linear(nn.Linear(64, 300, device="meta"), x.to("meta")).device.type == "meta"
    assert calls == []


class Doubled(nn.Linear):  # a decoder with its own forward, as a LoRA or quantized layer has
    def forward(self, x):
        return 2 * super().forward(x)


@pytest.mark.parametrize("onednn", [True, False])
def test_padded_inference_calls_a_decoder_that_is_not_a_plain_linear(onednn):
    """Skipping padding at inference must not compute the decoder from its weight behind its back: a subclass's
    forward and the decoder's hooks run, and the logits are those of the padded path with the same decoder."""
    ids, mask = token_batch(batch=4, length=9, pad_rows=(0, 1, 2, 3))
    ids[:, 2:], mask[:, 2:] = 1, 0  # mostly padding: the kept-rows path
    model = xm.XmodForMaskedLM(tiny_config(skip_padding="always")).eval()
    reference = xm.XmodForMaskedLM(tiny_config(skip_padding="never")).eval()
    reference.load_state_dict(model.state_dict())
    for m in (model, reference):
        doubled = Doubled(32, m.config.vocab_size)
        doubled.load_state_dict(m.lm_head.decoder.state_dict())
        m.set_output_embeddings(doubled)
    rows: list[int] = []
    hook = model.lm_head.decoder.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[0]))
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=onednn):
        out = model(ids, attention_mask=mask, lang_ids=LANG_IDS).logits
        ref = reference(ids, attention_mask=mask, lang_ids=LANG_IDS).logits
    hook.remove()
    real = mask.bool()
    assert sorted(rows) == [1, int(mask.sum())]  # the zero state, then the kept rows
    assert max_diff(out[real], ref[real]) <= TOL


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "autograd"])
def test_a_hook_on_the_lm_head_sees_the_call_it_would_see_without_skipping(grad):
    """The kept-rows paths call the head on a zero state and on the kept rows: a hook on the head (a feature
    extractor) would capture those instead of the (B, T, D) states. With a hook, the head runs on every row."""
    ids, mask = token_batch(batch=4, length=9, pad_rows=(0, 1, 2, 3))
    ids[:, 2:], mask[:, 2:] = 1, 0  # mostly padding: the kept-rows path without a hook
    model = xm.XmodForMaskedLM(tiny_config(skip_padding="always")).eval()
    reference = xm.XmodForMaskedLM(tiny_config(skip_padding="never")).eval()
    reference.load_state_dict(model.state_dict())
    shapes: list[tuple[int, ...]] = []
    hook = model.lm_head.register_forward_hook(lambda _m, args, _out: shapes.append(tuple(args[0].shape)))
    with torch.set_grad_enabled(grad):
        out = model(ids, attention_mask=mask, lang_ids=LANG_IDS).logits
    hook.remove()
    with torch.no_grad():
        ref = reference(ids, attention_mask=mask, lang_ids=LANG_IDS).logits
    assert shapes == [(4, 9, 32)]
    real = mask.bool()
    assert max_diff(out[real], ref[real]) <= TOL
