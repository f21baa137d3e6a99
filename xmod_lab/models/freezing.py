"""Freezing policies and a trainable-parameter report, by parameter name alone.

Every X-MOD parameter falls in one group, read off its name (transformers' X-MOD keys, with or
without the ``roberta.`` prefix of the head classes):

=====================  ==========================================================================
group                  names
=====================  ==========================================================================
``embeddings``         ``embeddings.*`` (a tied LM decoder weight is the word embedding itself)
``shared``             every other ``encoder.*`` weight: attention, FFN, ``output.LayerNorm``, the
                       final ``encoder.LayerNorm`` of pre-norm models
``adapter:<code>``     ``encoder.layer.N.output.adapter_modules.<code>.*`` (``<code>`` is
                       ``shared`` when ``adapter_mode="shared"``)
``adapter_layer_norm`` ``encoder.layer.N.output.adapter_layer_norm.*`` (one per layer, used by
                       every language)
``head``               everything outside the backbone (``lm_head``, ``classifier``,
                       ``qa_outputs``) and the backbone's ``pooler``
=====================  ==========================================================================

Policies (``apply_freeze_policy``):

- ``none``: everything trains.
- ``paper``: the paper's fine-tuning recipe = transformers' ``freeze_embeddings_and_language_adapters``:
  embeddings, all adapters and adapter LayerNorms frozen; ``output.LayerNorm`` keeps training.
- ``adapters_only``: adding a language: only the adapters of ``languages`` train (all languages
  when None). The adapter LayerNorm is shared by every language, so it trains only when every
  language's adapters do; with a subset it stays frozen, which keeps the other languages' outputs
  bit-identical (add it back with ``include=[r"adapter_layer_norm"]`` if you accept the drift).
- ``head_only``: only the task head (and pooler) trains.
- ``custom``: ``include`` regexes pick the trainable names (everything when only ``exclude`` is
  given), ``exclude`` regexes then remove names.

For every policy ``train_embeddings`` / ``train_head`` add those groups, then ``include`` adds and
``exclude`` removes names (``re.search`` over full parameter names).

``auto`` (xmod-train's default) is ``paper`` for a backbone that was loaded or pre-trained, ``none`` for one
built from scratch (:func:`resolve_policy`). A model built from scratch (``from_scratch=True``) may not keep its
embeddings or adapters frozen: they would stay random for the whole run, which trains only the rest around
them and reports the result as if it were the policy's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from torch import nn

from xmod_lab.options import AUTO_POLICY as AUTO  # paper after loading or pre-training, none from scratch
from xmod_lab.options import FREEZE_POLICIES as POLICIES


def resolve_policy(policy: str, from_scratch: bool) -> str:
    """The policy ``auto`` stands for (``paper``, or ``none`` for a model built from scratch); others as given."""
    policy = str(getattr(policy, "value", policy))  # an Enum member from a structured Hydra config
    if policy != AUTO:
        return policy
    return "none" if from_scratch else "paper"

EMBEDDINGS = "embeddings"
SHARED = "shared"
ADAPTER_LN = "adapter_layer_norm"
HEAD = "head"
ADAPTER_PREFIX = "adapter:"

_ADAPTER_RE = re.compile(r"(?:^|\.)encoder\.layer\.\d+\.output\.adapter_modules\.([^.]+)\.")
_ADAPTER_LN_RE = re.compile(r"(?:^|\.)encoder\.layer\.\d+\.output\.adapter_layer_norm\.")


def parameter_group(name: str) -> str:
    """The group of one parameter name (see the module docstring)."""
    bare = name.removeprefix("roberta.")
    match = _ADAPTER_RE.search(name)
    if match:
        return ADAPTER_PREFIX + match.group(1)
    if _ADAPTER_LN_RE.search(name):
        return ADAPTER_LN
    if bare.startswith("embeddings."):
        return EMBEDDINGS
    if bare.startswith("encoder."):
        return SHARED
    return HEAD


def _named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    # Tied weights appear once, under the name registered first (the word embedding).
    return list(model.named_parameters())


def _languages(model: nn.Module) -> list[str]:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "languages"):
        raise TypeError(f"{type(model).__name__} has no X-MOD config; pass an xmod_lab model")
    return list(config.languages)


def _adapter_keys_for(model: nn.Module, languages: Sequence[str] | None) -> set[str]:
    config = model.config
    known = _languages(model)
    if languages is None:
        return set(getattr(config, "adapter_keys", known))
    if isinstance(languages, str):
        languages = [languages]
    unknown = [code for code in languages if code not in known]
    if unknown:
        raise ValueError(f"unknown language code(s) {unknown}; this model has {known}")
    if getattr(config, "adapter_mode", "modular") == "shared":
        raise ValueError(
            "adapter_mode='shared' has one adapter for every language; train it with languages=None"
        )
    return set(languages)


def _compile(patterns: Iterable[str], what: str) -> list[re.Pattern[str]]:
    if isinstance(patterns, str):
        patterns = [patterns]
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise ValueError(f"{what} pattern {pattern!r} is not a valid regex: {err}") from None
    return compiled


def _matching(names: list[str], patterns: list[re.Pattern[str]], what: str) -> set[str]:
    matched: set[str] = set()
    for pattern in patterns:
        hits = {n for n in names if pattern.search(n)}
        if not hits:
            examples = ", ".join(names[:4])
            raise ValueError(
                f"{what} pattern {pattern.pattern!r} matches no parameter name (names look like: {examples}, ...)"
            )
        matched |= hits
    return matched


def apply_freeze_policy(
    model: nn.Module,
    policy: str,
    languages: Sequence[str] | None = None,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    train_embeddings: bool = False,
    train_head: bool = False,
    from_scratch: bool = False,
) -> list[str]:
    """Set ``requires_grad`` on every parameter by ``policy``; returns the trainable names, sorted.

    Raises ValueError for an unknown policy or language, a pattern that matches nothing, a result with
    nothing left to train, or (``from_scratch``: randomly initialised weights) frozen embeddings or adapters.
    """
    policy = resolve_policy(policy, from_scratch)
    if policy not in POLICIES:
        raise ValueError(f"unknown freeze policy {policy!r}; choose one of {POLICIES}")
    if languages is not None and policy != "adapters_only":
        raise ValueError(f"languages= only applies to policy 'adapters_only', not {policy!r}")
    include_res = _compile(include, "include")
    exclude_res = _compile(exclude, "exclude")
    if policy == "custom" and not include_res and not exclude_res:
        raise ValueError("policy 'custom' needs include= and/or exclude= regex patterns")

    params = _named_parameters(model)
    names = [n for n, _ in params]
    groups = {n: parameter_group(n) for n in names}

    if policy == "none":
        trainable = set(names)
    elif policy == "paper":
        trainable = {n for n, g in groups.items() if g in (SHARED, HEAD)}
    elif policy == "adapters_only":
        keys = _adapter_keys_for(model, languages)
        if not keys:
            raise ValueError("policy 'adapters_only' on a model without adapters (adapter_mode='none')")
        trainable = {
            n for n, g in groups.items() if g.startswith(ADAPTER_PREFIX) and g[len(ADAPTER_PREFIX) :] in keys
        }
        if languages is None:
            trainable |= {n for n, g in groups.items() if g == ADAPTER_LN}
    elif policy == "head_only":
        trainable = {n for n, g in groups.items() if g == HEAD}
    else:  # custom
        trainable = set() if include_res else set(names)

    if train_embeddings:
        trainable |= {n for n, g in groups.items() if g == EMBEDDINGS}
    if train_head:
        trainable |= {n for n, g in groups.items() if g == HEAD}
    trainable |= _matching(names, include_res, "include")
    trainable -= _matching(names, exclude_res, "exclude")

    if not trainable:
        raise ValueError(
            f"freeze policy {policy!r} (languages={languages}, include={list(include)}, "
            f"exclude={list(exclude)}) leaves no trainable parameter"
        )
    if from_scratch:
        frozen = {g for n, g in groups.items() if n not in trainable
                  and (g == EMBEDDINGS or g == ADAPTER_LN or g.startswith(ADAPTER_PREFIX))}
        if frozen:
            adapters = sum(g.startswith(ADAPTER_PREFIX) for g in frozen)
            named = [g for g in (EMBEDDINGS, ADAPTER_LN) if g in frozen] + ([f"{adapters} adapter(s)"] if adapters else [])
            raise ValueError(
                f"freeze policy {policy!r} keeps {' and '.join(named)} frozen, but this model was built from scratch "
                "(model.pretrained=null, no pre-training stage): those weights would stay random for the whole run. "
                "Freezing them only makes sense after pre-training: use freeze=none (or freeze=auto), pre-train first "
                "(pretrain=synthetic_mlm on the synthetic languages), or load a backbone (model.pretrained=...)."
            )
    for name, param in params:
        param.requires_grad_(name in trainable)
    return sorted(trainable)


@dataclass
class ParameterReport:
    """Trainable / frozen parameter counts per group, in a stable order."""

    rows: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def trainable(self) -> int:
        return sum(t for t, _ in self.rows.values())

    @property
    def frozen(self) -> int:
        return sum(f for _, f in self.rows.values())

    @property
    def table(self) -> str:
        width = max([len("group"), len("total"), *(len(g) for g in self.rows)])
        lines = [f"{'group':<{width}}  {'trainable':>12}  {'frozen':>12}  {'total':>12}"]
        lines.append("-" * len(lines[0]))
        for group, (t, f) in [*self.rows.items(), ("total", (self.trainable, self.frozen))]:
            if group == "total":
                lines.append("-" * len(lines[0]))
            lines.append(f"{group:<{width}}  {t:>12,}  {f:>12,}  {t + f:>12,}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table


def parameter_report(model: nn.Module) -> ParameterReport:
    """Count trainable vs frozen parameters by group: embeddings, shared, each adapter, adapter LN, head."""
    counts: dict[str, list[int]] = {}
    for name, param in _named_parameters(model):
        slot = counts.setdefault(parameter_group(name), [0, 0])
        slot[0 if param.requires_grad else 1] += param.numel()
    order = [EMBEDDINGS, SHARED]
    config = getattr(model, "config", None)
    adapter_keys = list(getattr(config, "adapter_keys", getattr(config, "languages", [])))
    order += [ADAPTER_PREFIX + key for key in adapter_keys]
    order += sorted(g for g in counts if g.startswith(ADAPTER_PREFIX) and g not in order)
    order += [ADAPTER_LN, HEAD]
    return ParameterReport({g: (counts[g][0], counts[g][1]) for g in order if g in counts})
