"""What makes language dispatch flat-cost: absent adapters do no work and get no gradient, one host sync
per mixed forward (none for a known single language), and the graph compiles.

Host syncs are counted on CPU with a TorchFunctionMode that records the tensor calls which block on the
device (``tolist``, ``item``, ``bool(t)``, ``nonzero``, boolean-mask indexing, ...). The same counter
applied to transformers' port shows it is not vacuous: that one syncs for every language in every layer.
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from xmod_lab.models import XmodForMaskedLM, XmodForSequenceClassification, XmodModel

from .helpers import LANGS, at_real, hf_twin, max_diff, tiny_config, token_batch

# Tensor calls that wait for the device to hand data to the host (on a GPU: a cudaStreamSynchronize).
_SYNCING = {
    "tolist",
    "item",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "cpu",
    "numpy",
    "nonzero",
    "masked_select",
    "unique",
    "unique_consecutive",
    "bincount",  # without minlength its output size depends on the data
}


class SyncCounter(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in _SYNCING:
            self.calls.append(name)
        elif name in ("__getitem__", "__setitem__") and _has_bool_index(args[1] if len(args) > 1 else None):
            self.calls.append(f"{name}[bool mask]")  # output size depends on the mask's values
        return func(*args, **(kwargs or {}))


def _has_bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def count_syncs(fn) -> list[str]:
    with SyncCounter() as counter:
        fn()
    # cpu() of a tensor already on the CPU copies nothing; our routing never calls it anyway.
    return counter.calls


def _adapter_names(model, codes):
    return [n for n, _ in model.named_parameters() if any(f".adapter_modules.{c}." in n for c in codes)]


@pytest.fixture
def batch():
    return token_batch(batch=4, length=9)


# ------------------------------------------------------------------------------ absent adapters
def test_absent_adapters_get_no_grad_and_adamw_leaves_them_untouched(batch):
    ids, mask = batch
    torch.manual_seed(0)
    model = XmodForMaskedLM(tiny_config()).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    lang_ids = torch.tensor([1, 0, 1, 0])  # en_XX and de_DE present; fr_XX and sw_KE absent
    labels = ids.masked_fill(mask == 0, -100)
    for _ in range(2):  # a second step: state of present adapters exists, absent ones still have none
        optimizer.zero_grad(set_to_none=True)
        model(ids, attention_mask=mask, lang_ids=lang_ids, labels=labels).loss.backward()
        params = dict(model.named_parameters())
        absent, present = _adapter_names(model, ["fr_XX", "sw_KE"]), _adapter_names(model, ["en_XX", "de_DE"])
        assert absent and present
        assert all(params[n].grad is None for n in absent)
        assert all(params[n].grad is not None and params[n].grad.abs().sum() > 0 for n in present)
        optimizer.step()
    params = dict(model.named_parameters())
    for n in absent:
        assert torch.equal(params[n], before[n]), f"{n} moved although its language was absent"
        assert params[n] not in optimizer.state or not optimizer.state[params[n]], n
    for n in present:
        assert not torch.equal(params[n], before[n]), f"{n} did not train"
        assert optimizer.state[params[n]]["exp_avg"].abs().sum() > 0


def test_transformers_port_moves_absent_adapters_for_contrast(batch):
    # The defect we avoid (xmod-facts §4): 5.x hands absent adapters zero gradients, so AdamW decays them.
    ids, mask = batch
    torch.manual_seed(0)
    twin = hf_twin(XmodForMaskedLM(tiny_config()).train())
    absent = _adapter_names(twin, ["fr_XX"])
    twin(input_ids=ids, attention_mask=mask, lang_ids=torch.tensor([1, 0, 1, 0])).logits.sum().backward()
    grads = dict(twin.named_parameters())
    assert all(grads[n].grad is not None and not grads[n].grad.any() for n in absent)


def test_gradient_checkpointing_keeps_absent_adapters_gradient_free(batch):
    ids, mask = batch
    torch.manual_seed(0)
    model = XmodForSequenceClassification(tiny_config()).train()
    lang_ids, labels = torch.tensor([3, 0, 3, 0]), torch.tensor([0, 1, 2, 1])
    model(ids, attention_mask=mask, lang_ids=lang_ids, labels=labels).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.gradient_checkpointing_enable()
    loss = model(ids, attention_mask=mask, lang_ids=lang_ids, labels=labels).loss
    loss.backward()
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == ref.keys()
    assert not set(_adapter_names(model, ["de_DE", "fr_XX"])) & got.keys()
    assert max(max_diff(got[n], ref[n]) for n in ref) <= 1e-6


# ---------------------------------------------------------------------------------- host syncs
@pytest.mark.parametrize("layers", [1, 2, 4])
def test_one_host_sync_per_mixed_forward_whatever_the_depth(batch, layers):
    ids, mask = batch
    model = XmodForMaskedLM(tiny_config(num_hidden_layers=layers)).train()
    labels = ids.masked_fill(mask == 0, -100)
    lang_ids = torch.tensor([3, 0, 2, 0])

    def step():
        model(ids, attention_mask=mask, lang_ids=lang_ids, labels=labels).loss.backward()

    # the backbone: one sync whatever the depth; the LM head, which runs on the kept tokens when the backbone
    # skips padding, one more (the kept count, to decide as the backbone does), never per layer
    # (tests/models/test_padding.py::test_masked_lm_head_reads_the_kept_tokens_only)
    assert count_syncs(step) == ["tolist", "__int__"]
    assert count_syncs(lambda: model.roberta(ids, attention_mask=mask, lang_ids=lang_ids)) == ["tolist"]


def test_no_host_sync_when_the_language_is_known(batch):
    ids, mask = batch
    # Skipping padding needs the token count (one sync: tests/models/test_padding.py); here it is off.
    model = XmodModel(tiny_config(skip_padding="never"))
    assert count_syncs(lambda: model(ids, attention_mask=mask, lang_ids=2)) == []
    model.set_default_language("sw_KE")
    assert count_syncs(lambda: model(ids, attention_mask=mask)) == []
    # A tensor must be looked at once, even when it holds one language; then no indexing follows.
    assert count_syncs(lambda: model(ids, attention_mask=mask, lang_ids=torch.tensor([1, 1, 1, 1]))) == [
        "tolist"
    ]


def test_sync_counter_sees_transformers_per_language_masks(batch):
    ids, mask = batch
    for layers in (1, 2):
        twin = hf_twin(XmodModel(tiny_config(num_hidden_layers=layers)))
        calls = count_syncs(
            lambda t=twin: t(input_ids=ids, attention_mask=mask, lang_ids=torch.tensor([3, 0, 2, 0]))
        )
        # Every layer indexes with a boolean mask for every language of the model, present or not.
        assert sum("bool mask" in c for c in calls) >= layers * len(LANGS)


# ------------------------------------------------------------------------------ work per language
def _count_adapter_calls(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] == "adapter_modules":
            code = parts[-1]
            module.register_forward_hook(lambda *_, c=code: counts.__setitem__(c, counts.get(c, 0) + 1))
    return counts


@pytest.mark.parametrize("languages", [4, 40])
def test_adapter_calls_do_not_grow_with_the_model_languages(batch, languages):
    ids, mask = batch
    codes = LANGS + [f"x{i}_XX" for i in range(languages - len(LANGS))]
    model = XmodModel(tiny_config(languages=codes, num_hidden_layers=3))
    counts = _count_adapter_calls(model)
    model(ids, attention_mask=mask, lang_ids=torch.tensor([3, 0, 3, 1]))
    assert counts == {"en_XX": 3, "de_DE": 3, "sw_KE": 3}  # once per layer per present language


def test_mixed_dispatch_matches_per_row_reference(batch):
    # Grouping rows by language and scattering them back must be exact (no reordering error).
    ids, mask = batch
    torch.manual_seed(0)
    model = XmodModel(tiny_config()).eval()
    lang_ids = torch.tensor([2, 0, 3, 0])
    mixed = model(ids, attention_mask=mask, lang_ids=lang_ids).last_hidden_state
    rows = [
        model(ids[i : i + 1], attention_mask=mask[i : i + 1], lang_ids=int(lang_ids[i])).last_hidden_state
        for i in range(4)
    ]
    # Real positions: whether padding is skipped depends on each batch's padding fraction.
    assert max_diff(at_real(mixed, mask), at_real(torch.cat(rows), mask)) <= 1e-6


# ------------------------------------------------------------------------------------- compile
@pytest.mark.slow
def test_compiled_backbone_matches_eager_on_mixed_batches(batch):
    ids, mask = batch
    torch.manual_seed(0)
    model = XmodModel(tiny_config()).eval()
    compiled = torch.compile(model, fullgraph=False, dynamic=False)
    lang_ids = torch.tensor([3, 0, 2, 0])
    with torch.no_grad():
        eager = model(ids, attention_mask=mask, lang_ids=lang_ids).last_hidden_state
        got = compiled(ids, attention_mask=mask, lang_ids=lang_ids).last_hidden_state
    assert max_diff(got, eager) <= 1e-5


@pytest.mark.slow
def test_common_path_compiles_without_graph_break(batch):
    ids, mask = batch
    torch.manual_seed(0)
    model = XmodForMaskedLM(tiny_config(default_language="de_DE")).train()
    labels = ids.masked_fill(mask == 0, -100)
    torch._dynamo.reset()
    compiled = torch.compile(model.roberta, fullgraph=True, dynamic=False)  # raises on any graph break
    ref = model.roberta(ids, attention_mask=mask, lang_ids=1).last_hidden_state
    out = compiled(ids, attention_mask=mask, lang_ids=1).last_hidden_state
    assert max_diff(out, ref) <= 1e-5
    out_default = compiled(ids, attention_mask=mask).last_hidden_state  # default language: no lang_ids
    assert max_diff(out_default, ref) <= 1e-5
    with torch.no_grad():  # inference: kernels.linear steps aside while compiling, with no graph break
        assert max_diff(compiled(ids, attention_mask=mask, lang_ids=1).last_hidden_state, ref) <= 1e-5
    loss = torch.nn.functional.cross_entropy(model.lm_head(out_default).flatten(0, 1), labels.flatten())
    loss.backward()  # compiled backward too; absent adapters stay gradient-free
    assert all(p.grad is None for n, p in model.named_parameters() if ".adapter_modules.en_XX." in n)


# ----------------------------------------------------------------------------------------- DDP
def test_ddp_with_unused_adapters(batch, tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    ids, mask = batch
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        model = DistributedDataParallel(XmodForMaskedLM(tiny_config()).train(), find_unused_parameters=True)
        labels = ids.masked_fill(mask == 0, -100)
        for _ in range(2):  # the second iteration checks DDP's unused-parameter bookkeeping resets cleanly
            model.zero_grad(set_to_none=True)
            model(
                ids, attention_mask=mask, lang_ids=torch.tensor([1, 0, 1, 0]), labels=labels
            ).loss.backward()
        params = dict(model.module.named_parameters())
        assert all(params[n].grad is None for n in _adapter_names(model.module, ["fr_XX", "sw_KE"]))
        assert all(params[n].grad is not None for n in _adapter_names(model.module, ["en_XX", "de_DE"]))
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------ masked-only LM head
def test_masked_logits_only_gives_the_same_loss_and_gradients(batch):
    ids, mask = batch
    torch.manual_seed(0)
    model = XmodForMaskedLM(tiny_config()).train()
    labels = torch.full_like(ids, -100)
    labels[:, 2:5] = ids[:, 2:5]
    lang_ids = torch.tensor([1, 0, 1, 0])
    full = model(ids, attention_mask=mask, lang_ids=lang_ids, labels=labels)
    full.loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    out = model(ids, attention_mask=mask, lang_ids=lang_ids, labels=labels, masked_logits_only=True)
    assert out.logits.shape == (12, model.config.vocab_size)  # only the 4 x 3 positions with a target
    assert max_diff(out.logits, full.logits[:, 2:5].reshape(12, -1)) <= 1e-5
    assert abs(out.loss.item() - full.loss.item()) <= 1e-5
    out.loss.backward()
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == ref.keys()
    assert max(max_diff(got[n], ref[n]) for n in ref) <= 1e-5
    with pytest.raises(ValueError, match="masked_logits_only=True needs labels"):
        model(ids, attention_mask=mask, lang_ids=lang_ids, masked_logits_only=True)
