"""The model layer's option lists, each declared once: XmodConfig's adapter fields, the adapter modes, the
freezing policies and the arguments of a freezing policy.

Plain Python (no torch, transformers, Lightning or Hydra, unlike ``xmod_lab.models``, whose package imports
transformers): the config schema (``xmod_lab/conf/schema.py``) builds its typed ``adapter`` and ``freeze``
groups from these before anything heavy loads (``xmod-train --help`` answers in a second), while
``models/configuration.py``, ``models/freezing.py`` and the tasks read the same names.
"""

from __future__ import annotations

from typing import Any, Union

# modular: one adapter per language (X-MOD); shared: one adapter for every language (the paper's non-modular
# baseline); none: no adapters (XLM-R-like)
ADAPTER_MODES = ("modular", "shared", "none")

# XmodConfig's adapter fields (its defaults: models/configuration.py) and the type a config gives each: the keys
# of the `adapter` config group, where null (every key's default) keeps the model's value.
ADAPTER_FIELDS: dict[str, Any] = {
    "adapter_reduction_factor": Union[int, float],  # bottleneck = max(1, round(hidden / factor))  # noqa: UP007
    "adapter_layer_norm": bool,  # a separate LayerNorm before the adapter (pre-norm models)
    "adapter_reuse_layer_norm": bool,  # apply output.LayerNorm before the adapter
    "ln_before_adapter": bool,  # adapter residual = normalised input
    "adapter_mode": str,  # one of ADAPTER_MODES
    "adapter_layers": list[int],  # the layers that hold adapters, e.g. [6, 7, 8, 9, 10, 11]; null = all
    "adapter_activation": str,  # null = hidden_act
}

# The policies of models.freezing.apply_freeze_policy (its docstring says what each trains) and `auto`, which
# stands for paper after loading or pre-training the backbone, none from scratch (xmod-train's default).
FREEZE_POLICIES = ("none", "paper", "adapters_only", "head_only", "custom")
AUTO_POLICY = "auto"

# The arguments of models.freezing.apply_freeze_policy after the model, with their types and defaults (the policy:
# the config's; the function needs one): the keys of the `freeze` config group.
FREEZE_ARGUMENTS: dict[str, tuple[Any, Any]] = {
    "policy": (str, AUTO_POLICY),  # one of FREEZE_POLICIES, or AUTO_POLICY
    "languages": (Union[list[str], None], None),  # adapters_only: the adapters that train (None: all)  # noqa: UP007
    "include": (list[str], ()),  # regexes (re.search over parameter names) of names that train as well
    "exclude": (list[str], ()),  # regexes of names that do not
    "train_embeddings": (bool, False),
    "train_head": (bool, False),
}
