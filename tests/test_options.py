"""The option lists of xmod_lab.options are the ones the model layer takes: the config groups built from them
(conf/schema.py) pass nothing the model would refuse and miss nothing it accepts."""

from __future__ import annotations

import inspect
import types
import typing

import pytest
from omegaconf import OmegaConf

from xmod_lab.conf.schema import AdapterMode, FreezePolicy, TrainConf
from xmod_lab.models import XmodConfig, XmodModel
from xmod_lab.models.freezing import apply_freeze_policy, resolve_policy
from xmod_lab.options import ADAPTER_FIELDS, ADAPTER_MODES, AUTO_POLICY, FREEZE_ARGUMENTS, FREEZE_POLICIES

TINY = XmodConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                  languages=["en_XX"])


def test_adapter_fields_are_xmod_config_fields_of_the_same_type():
    hints = XmodConfig.__annotations__  # its own fields, as written (builtin types only)
    for name, kind in ADAPTER_FIELDS.items():
        assert name in hints, name
        assert _members(kind) <= _members(eval(hints[name])) - {type(None)}, name
    schema = OmegaConf.structured(TrainConf)
    assert list(schema.adapter) == list(ADAPTER_FIELDS)


def _members(kind: object) -> set:
    return set(typing.get_args(kind)) if typing.get_origin(kind) in (typing.Union, types.UnionType) else {kind}


def test_adapter_modes_are_the_ones_xmod_config_accepts():
    assert [m.value for m in AdapterMode] == list(ADAPTER_MODES)
    for mode in ADAPTER_MODES:
        XmodConfig(adapter_mode=mode)
    with pytest.raises(ValueError, match=r"adapter_mode must be one of \('modular', 'shared', 'none'\)"):
        XmodConfig(adapter_mode="modulr")


def test_freeze_arguments_are_the_parameters_of_apply_freeze_policy():
    parameters = list(inspect.signature(apply_freeze_policy).parameters.values())
    assert parameters[0].name == "model" and parameters[-1].name == "from_scratch"
    assert [p.name for p in parameters[1:-1]] == list(FREEZE_ARGUMENTS)
    for p in parameters[2:-1]:  # the policy has no default there (the config's is AUTO_POLICY)
        assert p.default == FREEZE_ARGUMENTS[p.name][1], p.name
    schema = OmegaConf.structured(TrainConf)
    assert list(schema.freeze) == list(FREEZE_ARGUMENTS) and schema.freeze.policy == AUTO_POLICY


def test_every_policy_of_the_config_is_one_apply_freeze_policy_knows():
    assert [p.value for p in FreezePolicy] == [AUTO_POLICY, *FREEZE_POLICIES]
    assert {resolve_policy(p, from_scratch) for p in FreezePolicy for from_scratch in (True, False)} <= \
        set(FREEZE_POLICIES)
    with pytest.raises(ValueError, match=r"unknown freeze policy 'frozen'; choose one of \('none', 'paper'"):
        apply_freeze_policy(XmodModel(TINY), "frozen")
