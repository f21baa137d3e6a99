"""Every command in the README's bash blocks, pasted into bash as a user would, really run in a fast mode.

Each block runs as a bash script (``set -e``) in its own working folder (``XMOD_ROOT``) holding a copy of one
seed run (a finished default run, made once), so blocks are independent of each other and of their order. Each
``xmod-train`` / ``xmod-eval`` runs for real with FAST overrides appended (2 steps, one val/test batch, small
synthetic data, a 2-step pre-training stage), chosen from its composed config so that only keys the command
has are touched. ``-m`` sweeps run every point. The synthetic data and pre-trained backbones are cached once
per session (``XMOD_CACHE``).

The hub cannot be reached (``HF_HUB_OFFLINE=1``, an empty ``HF_HOME``): a command needing a hub model or
dataset must fail with ONE message (``xmod-train: error: ...``, no traceback) naming the missing id, and
leave no run directory. Any other failure fails the test.

Commands that are not run as written are in MAPPED / SKIPPED below, each with its reason.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# README command -> what runs instead, and why.
MAPPED = {
    "make train": "xmod-train $ARGS (the Makefile's recipe; its `make install` step is the environment this test runs in)",
    "make train-seeds": "xmod-train -m seed=$SEEDS $ARGS then xmod-report, as the Makefile's recipe (SEEDS 0,1 "
                        "unless given: two seeds show the aggregation, six only cost time)",
    "make paper": "python -m xmod_lab.paper, toy form (--ks 2 --posthoc-k 2, FAST overrides), into the work folder",
    "jupyter lab": "jupyter lab --version (a server never exits); the notebook itself runs in tests/test_notebooks.py",
}
SKIPPED = {
    "make test": "the test suite, this test included: it would run itself (CI runs it anyway)",
    "make bench": "benchmarks/bench_model.py at --size base (270M parameters); tests/test_benchmarks.py runs the tiny size",
}
# Appended to every synthetic-data xmod-train / xmod-eval: seconds per run on a CPU.
FAST_TRAINER = ["trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]
FAST_DATA = ["data.n_train=64", "data.n_eval=16", "data.n_corpus=200", "data.eval_batch_size=16"]
# Offline, a command needing the hub must say which model, tokenizer or dataset it lacks (xmod_lab/hub.py).
HUB_ID = r"(model|tokenizer|dataset) '[^']+'.* is not in the local Hugging Face cache"

FAST_ARGS = r'''
import sys
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
import xmod_lab.conf.schema  # noqa: F401
from xmod_lab import run_dir
run_dir.register_resolvers()
command, fast_trainer, fast_data, args = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4:]
given = {a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a}
try:
    with initialize_config_module("xmod_lab.conf", version_base="1.3"):
        cfg = compose(command, overrides=[a for a in args if not a.startswith("-")])
except Exception:  # a bad command: the real run reports it
    sys.exit(0)
extra = [o for o in fast_trainer if o.split("=")[0] not in given]
if "n_train" in cfg.data:  # synthetic data: small
    extra += [o for o in fast_data if o.split("=")[0] not in given and o.split("=")[0][5:] in cfg.data]
pretrain = cfg.get("pretrain")
if pretrain and pretrain.get("overrides") and "pretrain.overrides" not in given:
    steps = [o for o in pretrain.overrides if not o.startswith("trainer.max_epochs")] + fast_trainer
    extra.append("pretrain.overrides=[" + ",".join(f"'{o}'" for o in steps) + "]")
print("\n".join(extra))
'''

WRAPPERS = r"""
set -euo pipefail
first_point() {  # -m a=1,2 b=x,y -> a=1 b=x (lists in brackets, dicts in braces and quoted values stay)
    for arg in "$@"; do
        [ "$arg" = "-m" ] && continue
        if [[ "$arg" == *=*,* && "$arg" != *=\[* && "$arg" != *=\{* && "$arg" != *=\'* && "$arg" != *=\"* ]]; then
            echo "${arg%%,*}"
        else
            echo "$arg"
        fi
    done
}
fast_run() {  # fast_run <program> <args...>: run with FAST overrides; a hub error must be one message
    local exe="$1"; shift
    local args=("$@") extra=() composable=()
    while IFS= read -r line; do composable+=("$line"); done < <(first_point "$@")
    while IFS= read -r line; do [ -n "$line" ] && extra+=("$line"); done < <(
        "$BIN/python" -c "$FAST_ARGS" "${exe#xmod-}" "$FAST_TRAINER" "$FAST_DATA" "${composable[@]}")
    local before; before=$(find "$XMOD_ROOT/outputs" -mindepth 1 -maxdepth 4 -type d 2>/dev/null | sort || true)
    set +e
    "$BIN/$exe" "${args[@]}" "${extra[@]}" > "$TMPDIR_/out" 2> "$TMPDIR_/err"
    local rc=$?
    set -e
    if [ $rc -eq 0 ]; then echo "ok: $exe $*"; return 0; fi
    local after; after=$(find "$XMOD_ROOT/outputs" -mindepth 1 -maxdepth 4 -type d 2>/dev/null | sort || true)
    if [ "$(grep -c "^$exe: error:" "$TMPDIR_/err")" = 1 ] && ! grep -q Traceback "$TMPDIR_/err" \
        && [ "$before" = "$after" ] && grep -Eq "$HUB_ID" "$TMPDIR_/err"; then
        echo "offline: $exe $*"; echo "offline-message: $(grep "^$exe: error:" "$TMPDIR_/err")"; return 0
    fi
    echo "FAILED ($rc): $exe $* ${extra[*]}" >&2; tail -40 "$TMPDIR_/err" >&2
    [ "$before" = "$after" ] || echo "new directories: $(comm -13 <(echo "$before") <(echo "$after"))" >&2
    return 1
}
xmod-train() { fast_run xmod-train "$@"; }
xmod-eval() { fast_run xmod-eval "$@"; }
xmod-report() { "$BIN/xmod-report" "$@" > /dev/null; echo "ok: xmod-report $*"; }
jupyter() { "$BIN/jupyter" "$1" --version > /dev/null; echo "ok: jupyter $*"; }
make() {  # MAPPED / SKIPPED in tests/test_readme.py
    local target="$1"; shift; local ARGS=""
    for a in "$@"; do [[ "$a" == ARGS=* ]] && ARGS="${a#ARGS=}"; done
    case "$target" in
        train) eval "xmod-train $ARGS" > /dev/null ;;
        train-seeds) local SEEDS="0,1"
               for a in "$@"; do [[ "$a" == SEEDS=* ]] && SEEDS="${a#SEEDS=}"; done
               eval "xmod-train -m seed=$SEEDS $ARGS" > /dev/null && "$BIN/xmod-report" > /dev/null ;;
        paper) "$BIN/python" -m xmod_lab.paper --ks 2 --posthoc-k 2 --jobs 1 $FAST_TRAINER data.n_train=64 \
                   data.n_eval=16 data.n_corpus=200 > /dev/null ;;
        test|bench) echo "skipped: make $target $*"; return 0 ;;
        *) echo "make $target: not in the test's MAPPED/SKIPPED table" >&2; return 1 ;;
    esac
    echo "ok: make $target $*"
}
"""


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def commands(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


README_BLOCKS = bash_blocks((ROOT / "README.md").read_text())


def test_readme_has_the_commands_this_test_runs():
    every = [c for block in README_BLOCKS for c in commands(block)]
    assert len(README_BLOCKS) >= 6 and len(every) >= 25
    programs = {c.split()[0] for c in every if "=" not in c.split()[0]}
    assert programs <= {"make", "xmod-train", "xmod-eval", "xmod-report", "jupyter"}, programs
    makes = {" ".join(c.split()[:2]) for c in every if c.startswith("make ")}
    jupyters = {" ".join(c.split()[:2]) for c in every if c.startswith("jupyter ")}
    assert makes | jupyters <= set(MAPPED) | set(SKIPPED), (makes | jupyters) - set(MAPPED) - set(SKIPPED)


def environment(work: Path, cache: Path) -> dict[str, str]:
    """XMOD_ROOT=work, the session's data cache, an empty hub cache, the hub offline."""
    env = {**os.environ, "BIN": str(BIN), "ROOT": str(ROOT), "XMOD_ROOT": str(work), "XMOD_CACHE": str(cache),
           "HF_HOME": str(work / ".hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_DIR": str(work), "TMPDIR_": str(work),
           "FAST_ARGS": FAST_ARGS, "FAST_TRAINER": " ".join(FAST_TRAINER), "FAST_DATA": " ".join(FAST_DATA),
           "HUB_ID": HUB_ID}
    env.pop("XMOD_SWEEP_DIR", None)
    return env


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory) -> tuple[Path, Path]:
    """(folder holding outputs/ with one finished fast default run, the session's data cache)."""
    work = tmp_path_factory.mktemp("readme-seed")
    cache = tmp_path_factory.getbasetemp() / "readme-cache"
    seed = run_bash("xmod-train", work, environment(work, cache))
    assert seed.returncode == 0 and "ok: " in seed.stdout, seed.stderr[-3000:]
    return work, cache


def run_bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    # its own process group: on a timeout the block's commands (a make paper study) are killed with bash, not
    # left running beside the rest of the suite
    with subprocess.Popen(["bash", "-c", WRAPPERS + script], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_readme_block_runs_pasted_into_bash(seed_run, tmp_path, index):
    seed, cache = seed_run
    shutil.copytree(seed / "outputs", tmp_path / "outputs", symlinks=True)
    block = README_BLOCKS[index]
    done = run_bash(block, tmp_path, environment(tmp_path, cache))
    assert done.returncode == 0, f"README block {index}:\n{block}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    ran = [line for line in done.stdout.splitlines() if line.startswith(("ok: ", "offline: ", "skipped: "))]
    programs = [c for c in commands(block) if not re.match(r"^\w+=", c)]
    assert len(ran) == len(programs), (ran, programs)  # every command ran or is in SKIPPED
    for line in done.stdout.splitlines():  # offline hub failures: the message names what is missing
        if line.startswith("offline-message: "):
            assert re.search(HUB_ID, line) and "HF_HUB_OFFLINE=1" in line, line
