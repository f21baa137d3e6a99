"""The figures of ``make paper`` (:mod:`xmod_lab.paper`) from its runs' saved files: per-point means and sample
standard deviations over seeds, the probe's learning curves, and the verdicts that weigh each claim against its
spread. Reads run folders only (``results.json``, ``csv/metrics.csv``, ``config.yaml``, the fact probe's
``fact_probe.json``: :mod:`xmod_lab.paper_probe`); trains nothing."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from xmod_lab.data.synthetic import indistinguishable_facts
from xmod_lab.data.synthetic_world import WORLD_DEFAULTS, WorldSettings
from xmod_lab.results import AVERAGES, parse_metric_key

MODES = ("shared", "modular")
KS = (1, 2, 8)
POSTHOC_K = 8
BUDGET_FACTOR = 2  # make paper's control: the smallest K pre-trained this many times longer, under budget/
BUDGET_DIR = "budget"
BUDGET_MODE = MODES[0]  # the control's mode (budget_run); at K = 1 its run stands for both modes
PROBE, ZERO_SHOT_PROBE, NEW_LANGUAGE = "en", "de", "rm"  # evaluation sets (dataset codes)
PROBE_FILE = "fact_probe.json"  # a pre-training run's fact probe (xmod_lab.paper_probe writes it)
SEEDS = 3  # training seeds per point (model initialisation and data order; the generated world is data.seed's)


def run_mode(mode: str, k: int) -> str:
    """The mode whose run stands for ``mode`` at K. With one language, the shared adapter is that language's own
    adapter: the same parameters, drawn in the same order (tests/test_paper.py), so the modular run serves both
    modes (one pre-training and one fine-tuning run less per seed)."""
    return "modular" if k == 1 else mode


def run_name(mode: str, k: int, seed: int) -> str:
    return f"{run_mode(mode, k)}_synthetic{k}_seed{seed}"


def budget_run(out: Path, k: int, seed: int) -> Path:
    """The budget's control for ``seed``: the smallest K (``k``) pre-trained ``BUDGET_FACTOR`` times longer, in
    ``BUDGET_MODE`` (at K = 1 the modular run stands for both modes, :func:`run_mode`)."""
    return out / BUDGET_DIR / run_name(BUDGET_MODE, k, seed)


def missing(step_dir: Path, mode: str, ks: Sequence[int], seed: int) -> list[int]:
    """The K whose run of ``mode`` and ``seed`` has not finished yet (a stopped study resumes where it was),
    leaving out the K at which another mode's run serves this one (:func:`run_mode`)."""
    return [k for k in ks if run_mode(mode, k) == mode and not (step_dir / run_name(mode, k, seed) / "run_complete").is_file()]


def run_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json"
    if not (run_dir / "run_complete").is_file() or not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no finished run (run_complete / results.json missing)")
    return json.loads(path.read_text())


def test_metrics(run_dir: Path) -> dict[str, float]:
    """The run's test metrics at full precision (``test/<lang>/<metric>``) from its CSV log; results.json
    rounds to 4 decimals, too coarse to call a change exactly zero."""
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    last: dict[str, float] = {}
    for row in rows:
        last.update({k: float(v) for k, v in row.items() if k.startswith("test/") and v not in ("", None)})
    if not last:
        raise FileNotFoundError(f"{run_dir}/csv/metrics.csv has no test metrics")
    return last


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1) of the values that exist; sd None below 2 values."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), (statistics.stdev(present) if len(present) >= 2 else None)


def _aggregate(per_seed: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        out[key], out[f"{key}_sd"] = mean_sd([r[key] for r in per_seed])
    return out


def nli_ks(ks: Sequence[int]) -> list[int]:
    """The K that the zero-shot step fine-tunes: K = 1 has no other language to transfer to, so no NLI run."""
    return [k for k in ks if k > 1]


CURSE_METRICS = ("probe_fact_loss", "probe_shared_fact_loss", "probe_mlm_loss", "mlm_loss_avg", "zero_shot_acc", "zero_shot_avg_acc", "en_acc", "updates")


def _fact_probe(run_dir: Path) -> dict[str, Any]:
    path = run_dir / PROBE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {PROBE_FILE} (python -m xmod_lab.paper writes it after pre-training)")
    found = json.loads(path.read_text())
    if found.get("language") != PROBE:
        raise ValueError(f"{path}: probes {found.get('language')!r}, the study's probe language is {PROBE!r}")
    return found


def curse_rows(out: Path, ks: Sequence[int], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (mode, K): the mean over seeds of each metric, its ``_sd``, and the seeds' own rows."""
    rows = []
    fine_tuned = set(nli_ks(ks))
    for mode in MODES:
        for k in ks:
            per_seed = []
            for seed in seeds:
                name = run_name(mode, k, seed)
                mlm = run_results(out / "mlm" / name)
                facts = _fact_probe(out / "mlm" / name)
                nli = run_results(out / "nli" / name) if k in fine_tuned else {}
                table = nli.get("test", {})
                others = [lang for lang in table if lang not in (PROBE, *AVERAGES)]
                zero_shot = table[ZERO_SHOT_PROBE]["acc"] if ZERO_SHOT_PROBE in table else None
                per_seed.append({
                    "seed": seed,
                    "probe_fact_loss": facts["private_fact_loss"],
                    "probe_shared_fact_loss": facts["shared_fact_loss"],
                    "probe_mlm_loss": mlm["test"][PROBE]["loss"],
                    "mlm_loss_avg": mlm["test"]["avg"]["loss"],
                    "zero_shot_acc": zero_shot,
                    "zero_shot_avg_acc": (sum(table[lang]["acc"] for lang in others) / len(others)) if others else None,
                    "en_acc": table[PROBE]["acc"] if PROBE in table else None,
                    "updates": mlm.get("global_step"),
                    "flags": (nli.get("diagnostics") or {}).get("flags", {}),
                })  # fmt: skip
            flags: dict[str, list[str]] = {}
            for r in per_seed:
                for lang, found in r["flags"].items():
                    flags.setdefault(lang, []).extend(f"seed {r['seed']}: {f}" for f in found)
            rows.append({
                "mode": mode,
                "languages": k,
                **_aggregate(per_seed, CURSE_METRICS),
                "zero_shot_language": ZERO_SHOT_PROBE if per_seed[0]["zero_shot_acc"] is not None else None,
                "flags": flags,
                "flagged_seeds": sum(1 for r in per_seed if r["flags"]),
                "seeds": list(seeds),
                "per_seed": per_seed,
            })  # fmt: skip
    return rows


def ambiguity_rows(out: Path, ks: Sequence[int], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Per K, from the world and languages its runs generated: how many of the probe language's own facts read
    alike in another of the K languages, and the fact probe's loss of a model that fits all of them equally on
    those clauses (:func:`xmod_lab.data.synthetic.indistinguishable_facts`): how much of a shared model's
    shortfall ambiguity alone explains."""
    rows = []
    for k in ks:
        cfg = OmegaConf.load(out / "mlm" / run_name("modular", k, seeds[0]) / "config.yaml")
        data = OmegaConf.to_container(cfg.data)
        assert isinstance(data, dict)
        world = WorldSettings.from_config(data)
        alike, loss = indistinguishable_facts(PROBE, list(cfg.languages.train), data["seed"], world)
        rows.append({"languages": k, "facts_alike": alike, "private_facts": world.private_facts,
                     "mixture_fact_loss": loss})  # fmt: skip
    return rows


POSTHOC_METRICS = ("new_language_mlm_loss", "new_language_mlm_loss_before", "old_languages_mlm_loss",
                   "new_minus_old_mlm_loss", "old_languages_max_loss_change")  # fmt: skip


def posthoc_rows(out: Path, k: int, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Per mode: the new language's loss before and after, how close it comes to the pre-trained languages
    (its loss minus their mean loss, after), and how far any old language's loss moved (the largest over
    seeds: modular must be exactly 0 in every seed)."""
    rows = []
    for mode in MODES:
        per_seed = []
        for seed in seeds:
            after = test_metrics(out / "posthoc" / f"{mode}_k{k}_seed{seed}_trainTrue")
            before = test_metrics(out / "posthoc" / f"{mode}_k{k}_seed{seed}_trainFalse")
            old = sorted(
                parsed[1] for parsed in map(parse_metric_key, after)
                if parsed and parsed[2] == "loss" and parsed[1] not in (NEW_LANGUAGE, *AVERAGES)
            )
            changes = {lang: after[f"test/{lang}/loss"] - before[f"test/{lang}/loss"] for lang in old}
            new = after[f"test/{NEW_LANGUAGE}/loss"]
            old_loss = statistics.fmean(before[f"test/{lang}/loss"] for lang in old)  # as pre-trained
            per_seed.append({
                "seed": seed,
                "new_language_mlm_loss": new,
                "new_language_mlm_loss_before": before[f"test/{NEW_LANGUAGE}/loss"],
                "old_languages_mlm_loss": old_loss,
                "new_minus_old_mlm_loss": new - old_loss,
                "old_languages_max_loss_change": max(abs(v) for v in changes.values()),
                "old_languages_loss_change": changes,
            })  # fmt: skip
        row = {"mode": mode, **_aggregate(per_seed, POSTHOC_METRICS)}
        row["old_languages_max_loss_change"] = max(r["old_languages_max_loss_change"] for r in per_seed)
        row["old_languages_loss_change"] = {
            lang: mean_sd([r["old_languages_loss_change"][lang] for r in per_seed])[0]
            for lang in per_seed[0]["old_languages_loss_change"]
        }
        rows.append({**row, "seeds": list(seeds), "per_seed": per_seed})
    return rows


def _combined(*sds: float | None) -> float | None:
    """The standard deviation of a sum or difference of independent means' estimates: sqrt of the summed
    variances (None when a term has none: fewer than 2 seeds)."""
    return None if any(sd is None for sd in sds) else math.sqrt(sum(sd * sd for sd in sds))  # type: ignore[operator]


CURSE_METRIC = "probe_fact_loss"  # the verdict's; the same rule on probe_mlm_loss is reported beside it


def curse_verdict(curse: Sequence[dict[str, Any]], metric: str = CURSE_METRIC) -> dict[str, Any]:
    """What the figures say about the claim, with their spread. The curse shows when (1) the shared model's
    probe loss (``metric``) at the largest K exceeds its value at the smallest K (K = 1) by more than twice the
    combined sd of the two means, (2) the modular model's does not, and (3) shared minus modular at the largest
    K exceeds twice its combined sd. Fewer than 2 seeds (no spread) or one K: it does not show."""
    by = {(r["mode"], r["languages"]): r for r in curse}
    ks = sorted({r["languages"] for r in curse})
    small, large = ks[0], ks[-1]
    change, spread, rises = {}, {}, {}
    for mode in MODES:
        lo, hi = by[mode, small], by[mode, large]
        change[mode] = hi[metric] - lo[metric]
        spread[mode] = _combined(hi[f"{metric}_sd"], lo[f"{metric}_sd"])
        rises[mode] = spread[mode] is not None and large > small and change[mode] > 2 * spread[mode]
    gap = by["shared", large][metric] - by["modular", large][metric]
    gap_spread = _combined(by["shared", large][f"{metric}_sd"], by["modular", large][f"{metric}_sd"])
    gap_shows = gap_spread is not None and gap > 2 * gap_spread
    why = None
    if large == small:
        why = "one K only: nothing to compare"
    elif gap_spread is None:
        why = "fewer than 2 seeds: no spread, so no verdict (--seeds 2 or more)"
    return {
        "metric": metric,
        "smallest_k": small,
        "largest_k": large,
        "probe_loss_change_smallest_to_largest_k": change,
        "probe_loss_change_sd": spread,
        "probe_loss_rises": rises,
        "gap_at_largest_k": gap,
        "gap_at_largest_k_sd": gap_spread,
        "gap_shows": gap_shows,
        "curse_shows": bool(rises["shared"] and not rises["modular"] and gap_shows and why is None),
        "no_verdict_because": why,
        "rule": "shared rises from the smallest to the largest K by > 2 combined sd, modular does not, and "
                "shared - modular at the largest K > 2 combined sd (sample sd over seeds, ddof 1; combined: "
                "sqrt of the summed variances)",
    }  # fmt: skip


def posthoc_verdict(posthoc: Sequence[dict[str, Any]]) -> dict[str, Any]:
    by = {r["mode"]: r for r in posthoc}
    return {
        "modular_old_languages_unchanged": by["modular"]["old_languages_max_loss_change"] == 0.0,
        "shared_old_languages_changed": by["shared"]["old_languages_max_loss_change"] > 0.0,
    }


SETTING_KEYS = {
    "mlm": (("model", "model.config"), ("adapter reduction factor", "adapter.adapter_reduction_factor"),
            ("data", "data"), ("epochs", "trainer.max_epochs"), ("max steps", "trainer.max_steps"),
            ("learning rate", "optimizer.lr"), ("batch size", "data.batch_size")),
    "nli": (("epochs", "trainer.max_epochs"), ("max steps", "trainer.max_steps"), ("learning rate", "optimizer.lr"),
            ("freeze", "freeze.policy"), ("training pairs per language", "data.n_train")),
    "posthoc": (("epochs", "trainer.max_epochs"), ("max steps", "trainer.max_steps"),
                ("learning rate", "optimizer.lr")),
}  # fmt: skip
_MODEL_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                 "position_embedding_type", "initializer_range")
_DATA_FIELDS = ("n_corpus", "n_train", "n_eval", "seed", "vocab_size", *WORLD_DEFAULTS)


def check_one_world(out: Path, ks: Sequence[int], seeds: Sequence[int], posthoc_k: int) -> None:
    """Every run of the study generated its data with the same settings. A resumed study reuses finished
    runs; after a change of the world (conf/world/paper.yaml, data.* overrides) they would silently mix two
    worlds in one table."""
    dirs = [out / step / run_name(mode, k, seed) for step, step_ks in (("mlm", ks), ("nli", nli_ks(ks)))
            for mode in MODES for k in step_ks for seed in seeds]  # fmt: skip
    dirs += [out / "posthoc" / f"{mode}_k{posthoc_k}_seed{seed}_train{t}" for mode in MODES for seed in seeds
             for t in (True, False)]  # fmt: skip
    dirs += [budget_run(out, min(ks), seed) for seed in seeds]
    first: tuple[Path, dict[str, Any]] | None = None
    for run_dir in dirs:
        data = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml").data)
        assert isinstance(data, dict)
        # a run saved before the world settings existed had the default (off) world
        generation = {f: data.get(f, WORLD_DEFAULTS.get(f)) for f in _DATA_FIELDS}
        if first is None:
            first = (run_dir, generation)
        elif generation != first[1]:
            diff = {f: (first[1][f], generation[f]) for f in _DATA_FIELDS if first[1][f] != generation[f]}
            raise ValueError(
                f"{run_dir} generated its data with other settings than {first[0]} ({diff}: "
                f"{first[0].name}'s, then its): the study mixes two worlds, probably resumed after a change. Use a new "
                f"--out, or delete the runs of the old setting under {out}."
            )


def study_settings(out: Path, ks: Sequence[int], seeds: Sequence[int], posthoc_k: int) -> dict[str, Any]:
    """What each step ran with, from one run's config.yaml per step (every run of a step shares them but
    languages, mode and seed)."""
    runs = {"mlm": out / "mlm" / run_name("modular", ks[-1], seeds[0]),
            "nli": out / "nli" / run_name("modular", ks[-1], seeds[0]),
            "posthoc": out / "posthoc" / f"modular_k{posthoc_k}_seed{seeds[0]}_trainTrue"}  # fmt: skip
    check_one_world(out, ks, seeds, posthoc_k)
    settings: dict[str, Any] = {}
    for step, run_dir in runs.items():
        cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
        assert isinstance(cfg, dict)
        found: dict[str, Any] = {}
        for label, key in SETTING_KEYS[step]:
            value: Any = cfg
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if label == "model" and isinstance(value, dict):
                value = {f: value[f] for f in _MODEL_FIELDS if f in value}
            elif label == "data" and isinstance(value, dict):
                value = {f: value[f] for f in _DATA_FIELDS if f in value}
            found[label] = None if (label == "max steps" and value == -1) else value  # -1: epochs decide
        settings[step] = found
    return settings



MLM_CURVE = f"val/{PROBE}/loss"  # the held-out MLM loss of the probe language at each validation
FACT_CURVE = f"val/{PROBE}/fact_private"  # its fact probe, own entries (xmod_lab.tasks.fact_probe.FactProbe)


def probe_curve(run_dir: Path, k: int, key: str = MLM_CURVE) -> list[tuple[float, float]]:
    """``(updates per language, value of key)`` at each validation of an MLM run, from its CSV log. A run on K
    languages makes about K updates per update of each language (every block once per epoch). Lightning logs a
    validation at the index of the last update before it (the step counter minus one): a validation after 800
    updates is logged at step 799."""
    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").open())
    return [((int(row["step"]) + 1) / k, float(row[key])) for row in rows if row.get(key) not in (None, "")]


def learning_curves(out: Path, ks: Sequence[int], seeds: Sequence[int], key: str = MLM_CURVE,
                    step: str = "mlm", modes: Sequence[str] = MODES) -> list[dict[str, Any]]:  # fmt: skip
    """Per mode and K: ``key`` (a validation metric of the probe language) against updates per language, the mean
    and sd over seeds at each validation (every seed of a point validates at the same steps: the same data and
    batch plan), from the runs under ``<out>/<step>`` (``mlm``, or ``budget``: the longer control, run in
    ``modes`` only)."""
    curves = []
    for mode in modes:
        for k in ks:
            per_seed = [probe_curve(out / step / run_name(mode, k, seed), k, key) for seed in seeds]
            steps = {tuple(x for x, _ in curve) for curve in per_seed}
            if len(steps) != 1:
                raise ValueError(f"{out / step}: the {mode} K = {k} runs logged {key} at different steps "
                                 f"({sorted(len(s) for s in steps)} validations): rerun them with the same settings")  # fmt: skip
            ends = {run_results(out / step / run_name(mode, k, seed)).get("global_step") for seed in seeds}
            if len(ends) != 1 or None in ends:
                raise ValueError(f"{out / step}: the {mode} K = {k} runs ended at different or unknown steps "
                                 f"({sorted(ends, key=str)}): rerun them with the same settings")  # fmt: skip
            points = []
            for i, (x, _) in enumerate(per_seed[0]):
                loss, sd = mean_sd([curve[i][1] for curve in per_seed])
                points.append({"updates_per_language": round(x, 1), "loss": loss, "loss_sd": sd})
            curves.append({"mode": mode, "languages": k, "points": points, "end_updates_per_language": ends.pop() / k,
                           "per_seed": [[loss for _, loss in curve] for curve in per_seed]})  # fmt: skip
    return curves


LAST_SHARE = 0.25  # the share of pre-training whose progress decides whether a point has plateaued
PLATEAU_RELATIVE = 0.01


def plateau_verdict(curves: Sequence[dict[str, Any]], k: int | None = None, modes: Sequence[str] = MODES,
                    what: str = "probe loss") -> dict[str, Any]:  # fmt: skip
    """Whether ``what`` (the curves' metric) has stopped falling at ``k`` (default: the smallest K) in ``modes``.
    At the smallest K it is the condition for reading a rise with K as a curse rather than as K times more
    training of the shared body; at the largest K, for the shared model's fact probe, it says whether training
    longer would close its gap. Per seed: its loss at the validation nearest to 75 % of the updates (of
    the whole training, ``end_updates_per_language``; default: the last validation) minus its last validation's
    (the drop over the last quarter, paired within the seed: the seeds' different levels do not hide
    a fall they all share). Plateaued: the mean drop is below 1 % of the final loss, or below twice its standard
    error (sd / sqrt(seeds): no fall the seeds agree on). The standard error, not the sd: the question is
    whether the mean drop differs from 0, and a rule on the sd would call a fall that every seed shows
    "plateaued" whenever the seeds fall by different amounts."""
    k = min(c["languages"] for c in curves) if k is None else k
    found: dict[str, Any] = {}
    for curve in (c for c in curves if c["languages"] == k and c["mode"] in modes):
        if len(curve["points"]) < 2:  # e.g. trainer.max_steps below an epoch: nothing to read a trend from
            found[curve["mode"]] = {"plateaued": False, "validations": len(curve["points"])}
            continue
        xs = [p["updates_per_language"] for p in curve["points"]]
        # 75 % of the training, not of the last validation: with validations every 3 epochs of 32, 75 % of the
        # last one (30 epochs) falls half-way between two validations and the window grew to 11 epochs of 32
        end = curve.get("end_updates_per_language", xs[-1])
        i = min(range(len(xs)), key=lambda j: abs(xs[j] - (1 - LAST_SHARE) * end))
        drops = [seed[i] - seed[-1] for seed in curve["per_seed"]]
        drop, drop_sd = mean_sd(drops)
        final, final_sd = mean_sd([seed[-1] for seed in curve["per_seed"]])
        assert drop is not None and final is not None
        drop_se = drop_sd / math.sqrt(len(drops)) if drop_sd is not None else None
        limit = max(PLATEAU_RELATIVE * final, 2 * drop_se if drop_se is not None else 0.0)
        found[curve["mode"]] = {
            "from_updates_per_language": xs[i], "to_updates_per_language": xs[-1], "drop": drop, "drop_sd": drop_sd,
            "drop_se": drop_se,
            "final_loss": final, "final_loss_sd": final_sd, "limit": limit, "plateaued": i < len(xs) - 1 and drop < limit,
        }  # fmt: skip
    if not found:
        raise ValueError(f"no learning curve of {'/'.join(modes)} at K = {k} (curves: "
                         f"{sorted({(c['mode'], c['languages']) for c in curves})})")  # fmt: skip
    few = [m for m, v in found.items() if "validations" in v]
    return {
        "k": k,
        "by_mode": found,
        "plateaued": all(v["plateaued"] for v in found.values()),
        "no_verdict_because": f"fewer than 2 validations of the K = {k} runs ({', '.join(few)}): no learning "
                              "curve (trainer.check_val_every_n_epoch)" if few else None,
        "rule": f"the {what} at K = {k} fell over the last quarter of pre-training (validation nearest 75 % "
                f"of the updates to the end, per seed) by less than {PLATEAU_RELATIVE:.0%} of its final value or "
                "less than twice the standard error of that drop over seeds (sd / sqrt(seeds))",
    }  # fmt: skip


def zero_shot_verdict(curse: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The paper's transfer claim with the spread: no zero-shot run flagged degenerate; modular's mean zero-shot
    accuracy over the other pre-trained languages is at no K below shared's by more than twice the combined sd;
    and modular's at the largest K is not below its own at the smallest K >= 2 by more than twice that sd."""
    rows = [r for r in curse if r["zero_shot_avg_acc"] is not None]
    if not rows:
        return {"no_verdict_because": "K = 1 only: no language to transfer to", "flagged_runs": 0}
    by = {(r["mode"], r["languages"]): r for r in rows}
    ks = sorted({r["languages"] for r in rows})
    key = "zero_shot_avg_acc"
    gaps = {}
    for k in ks:
        m, s = by["modular", k], by["shared", k]
        gaps[k] = {"modular_minus_shared": m[key] - s[key], "sd": _combined(m[f"{key}_sd"], s[f"{key}_sd"])}
    lo, hi = by["modular", ks[0]], by["modular", ks[-1]]
    change, change_sd = hi[key] - lo[key], _combined(hi[f"{key}_sd"], lo[f"{key}_sd"])
    spread_known = all(g["sd"] is not None for g in gaps.values()) and change_sd is not None
    return {
        "flagged_runs": sum(r["flagged_seeds"] for r in rows),
        "runs": sum(len(r["seeds"]) for r in rows),
        "modular_minus_shared": gaps,
        "modular_not_worse": spread_known and all(g["modular_minus_shared"] > -2 * g["sd"] for g in gaps.values()),
        "modular_change_smallest_to_largest_k": change,
        "modular_change_sd": change_sd,
        "modular_does_not_degrade": spread_known and (len(ks) == 1 or change > -2 * change_sd),  # type: ignore[operator]
        "no_verdict_because": None if spread_known else "fewer than 2 seeds: no spread, so no verdict",
        "rule": "mean zero-shot accuracy over the other pre-trained languages; modular not worse than shared: "
                "modular - shared > -2 combined sd at every K; no degradation: modular at the largest K minus at "
                "the smallest K >= 2 > -2 combined sd",
    }  # fmt: skip


LEARNT_SHARE = 0.05  # of the no-knowledge loss (ln 9)


def knowledge_verdict(curse: Sequence[dict[str, Any]], no_knowledge: float) -> dict[str, Any]:
    """Whether the smallest K has learnt its own facts: its mean private-fact loss plus twice its sd is below
    5 % of the no-knowledge loss (``no_knowledge``, ln 9: a uniform guess). Then the knowledge the languages
    compete for is saturated at K = 1 (it cannot fall much further), so a shared model that knows less at a
    larger K lost it to the other languages, not to a shorter training: each K has as many updates per language."""
    small = min(r["languages"] for r in curse)
    found = {}
    for r in (r for r in curse if r["languages"] == small):
        loss, sd = r["probe_fact_loss"], r["probe_fact_loss_sd"]
        found[r["mode"]] = {"private_fact_loss": loss, "private_fact_loss_sd": sd,
                            "learnt": loss is not None and sd is not None and loss + 2 * sd < LEARNT_SHARE * no_knowledge}  # fmt: skip
    return {
        "k": small,
        "by_mode": found,
        "learnt": all(v["learnt"] for v in found.values()),
        "limit": LEARNT_SHARE * no_knowledge,
        "no_verdict_because": None if all(v["private_fact_loss_sd"] is not None for v in found.values())
                              else "fewer than 2 seeds: no spread, so no verdict",
        "rule": f"the K = {small} fact probe (private entries) plus twice its sd over seeds is below "
                f"{LEARNT_SHARE:.0%} of the loss of a uniform guess (ln {round(math.exp(no_knowledge))} = "
                f"{no_knowledge:.3f}): at least about {math.exp(-LEARNT_SHARE * no_knowledge):.0%} on the true number",
    }  # fmt: skip


def budget_verdict(out: Path, curse: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Whether the study's pre-training is long enough at the smallest K: its fact probe (own entries) against
    that of the same runs (mode, seed, data) pre-trained ``BUDGET_FACTOR`` times longer (``<out>/budget/``).
    Per seed, the loss at the budget minus the longer run's; enough when the mean is below 1 % of the longer
    runs' loss or below twice its standard error (the plateau rule, :func:`plateau_verdict`, on the question
    itself). Within one run the last quarter of a schedule that decays the learning rate to 0 lowers the loss
    whatever the budget, and a model still sharpening its facts swings from one validation to the next by
    more than that fall; a longer run says whether training longer would lower it."""
    small = min(r["languages"] for r in curse)
    # the row of the control's mode holds the runs it repeats longer (at K = 1 both rows hold the same runs)
    row = next(r for r in curse if r["languages"] == small and r["mode"] == BUDGET_MODE)
    at_budget = {r["seed"]: r for r in row["per_seed"]}
    per_seed = []
    for seed in seeds:
        run = budget_run(out, small, seed)
        per_seed.append({"seed": seed, "probe_fact_loss": at_budget[seed]["probe_fact_loss"],
                         "probe_fact_loss_long": _fact_probe(run)["private_fact_loss"],
                         "updates": at_budget[seed]["updates"], "updates_long": run_results(run).get("global_step")})  # fmt: skip
    factors = {r["updates_long"] / r["updates"] for r in per_seed if r["updates"] and r["updates_long"]}
    if factors != {float(BUDGET_FACTOR)}:
        raise ValueError(f"{out / BUDGET_DIR}: the longer runs made {sorted(factors)} times the updates of the study's "
                         f"K = {small} runs, not {BUDGET_FACTOR}: rerun them (delete {out / BUDGET_DIR})")  # fmt: skip
    drop, drop_sd = mean_sd([r["probe_fact_loss"] - r["probe_fact_loss_long"] for r in per_seed])
    long, long_sd = mean_sd([r["probe_fact_loss_long"] for r in per_seed])
    assert drop is not None and long is not None
    drop_se = drop_sd / math.sqrt(len(per_seed)) if drop_sd is not None else None
    limit = max(PLATEAU_RELATIVE * long, 2 * drop_se if drop_se is not None else 0.0)
    return {
        "k": small, "factor": BUDGET_FACTOR, "updates": per_seed[0]["updates"], "updates_long": per_seed[0]["updates_long"],
        "fact_loss": row["probe_fact_loss"], "fact_loss_sd": row["probe_fact_loss_sd"],
        "fact_loss_long": long, "fact_loss_long_sd": long_sd, "drop": drop, "drop_sd": drop_sd, "drop_se": drop_se,
        "limit": limit, "enough": drop_se is not None and drop < limit, "per_seed": per_seed,
        "no_verdict_because": None if drop_se is not None else "fewer than 2 seeds: no spread, so no verdict",
        "rule": f"per seed, the K = {small} fact probe (own entries) at the study's budget minus the same run's "
                f"pre-trained {BUDGET_FACTOR} times longer; enough when the mean is below "
                f"{PLATEAU_RELATIVE:.0%} of the longer runs' loss or below twice its standard error (sd / sqrt(seeds))",
    }  # fmt: skip
