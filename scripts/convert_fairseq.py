"""Convert a fairseq X-MOD checkpoint (model.pt of a released archive) into an xmod-lab directory.

    python scripts/convert_fairseq.py xmod.base/model.pt converted/xmod-base
    python scripts/convert_fairseq.py finetuned/model.pt out --classification-head mnli --trust-checkpoint

The output loads with ``XmodForMaskedLM.from_pretrained(out)`` (or the sequence classifier), in
xmod-lab and in transformers. fairseq is not needed.
"""

from __future__ import annotations

import argparse
import logging

from xmod_lab.tools.fairseq import convert_fairseq_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_pt", help="path to fairseq's model.pt")
    parser.add_argument("out_dir", help="directory to write config.json and the weights to")
    parser.add_argument(
        "--classification-head",
        default=None,
        help="convert classification_heads.<NAME> into XmodForSequenceClassification instead of the LM head",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a full unpickle when the file holds more than tensors and configs (only for trusted files)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = convert_fairseq_checkpoint(
        args.model_pt, args.out_dir, args.classification_head, args.trust_checkpoint
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
