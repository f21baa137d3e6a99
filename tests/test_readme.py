"""Every command in the README's bash blocks, pasted into bash as a user would, in a fast mode.

The blocks run as bash scripts (``set -e``) in a fresh folder holding one finished-looking run and one
sweep, with the commands wrapped: ``xmod-train`` / ``xmod-eval`` compose their config (``--cfg job``:
every key, option and value must exist and parse, quoting included) or, with ``debug=fdr``, really run
one batch; ``-m`` sweeps compose their first point; ``make`` prints what it would do; ``xmod-report``
and ``jupyter`` run for real (``jupyter lab`` only reports its version).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_report import make_run

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

WRAPPERS = r"""
set -euo pipefail
first_point() {  # -m a=1,2 b=x,y -> a=1 b=x (lists in brackets and dicts in braces stay)
    for arg in "$@"; do
        [ "$arg" = "-m" ] && continue
        if [[ "$arg" == *=*,* && "$arg" != *=\[* && "$arg" != *=\{* && "$arg" != *=\'* && "$arg" != *=\"* ]]; then
            echo "${arg%%,*}"
        else
            echo "$arg"
        fi
    done
}
compose_or_run() {
    local exe="$1"; shift
    local args=(); while IFS= read -r line; do args+=("$line"); done < <(first_point "$@")
    if [[ " $* " == *" --help "* || " $* " == *" --cfg "* ]]; then
        "$BIN/$exe" "${args[@]}" > /dev/null
    elif [[ " $* " == *" debug=fdr "* ]]; then
        "$BIN/$exe" "${args[@]}" data.n_train=64 data.n_eval=16 > /dev/null
    else
        "$BIN/$exe" "${args[@]}" --cfg job > /dev/null
    fi
    echo "ok: $exe $*"
}
xmod-train() { compose_or_run xmod-train "$@"; }
xmod-eval() { compose_or_run xmod-eval "$@"; }
xmod-report() { "$BIN/xmod-report" "$@" > /dev/null; echo "ok: xmod-report $*"; }
jupyter() { "$BIN/jupyter" "$1" --version > /dev/null; echo "ok: jupyter $*"; }
make() { command make -n -C "$ROOT" "$@" > /dev/null; echo "ok: make $*"; }
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


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_readme_block_works_pasted_into_bash(tmp_path, index):
    block = README_BLOCKS[index]
    run = tmp_path / "outputs" / "default" / "runs" / "2026-11-29_10-00-00_freeze-paper"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").touch()
    make_run(tmp_path / "outputs" / "default" / "multiruns" / "2026-11-29_11-00-00", 0,
             ["adapter.adapter_reduction_factor=2"], [80.0, 60.0, 55.0], val=81.0)
    env = {**os.environ, "BIN": str(BIN), "ROOT": str(ROOT), "XMOD_CACHE": str(tmp_path / "cache"),
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.pop("XMOD_ROOT", None)
    env.pop("XMOD_SWEEP_DIR", None)
    done = subprocess.run(["bash", "-c", WRAPPERS + block], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, f"README block {index}:\n{block}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    ran = [line for line in done.stdout.splitlines() if line.startswith("ok: ")]
    programs = [c for c in commands(block) if not re.match(r"^\w+=", c)]
    assert len(ran) == len(programs), (ran, programs)  # every command ran (none skipped by the wrappers)
