"""``lowrank-blocks extract``: a fine-tuning update as a PEFT adapter, at one budget."""

from __future__ import annotations

import argparse
from typing import Any

from . import _common as c


def register(sub: Any) -> None:
    parser = c.add_command(
        sub, "extract",
        help="the update FT − BASE of a fine-tuned model as a PEFT adapter (LoRA or GraLoRA)",
        description=(
            "Approximate ΔW = W_ft − W_base of every matrix optimally (truncated SVD, block by "
            "block for GraLoRA) within one total budget and write a PEFT adapter directory that "
            "PeftModel.from_pretrained loads: with --structure global (default) a LoRA adapter "
            "whose rank_pattern holds the exactly optimal rank of every module; with grid:K a "
            "GraLoRA adapter (gralora_k = K) with the largest r within the budget. Matrices the "
            "fine-tuning left unchanged are not adapted. Prints the per-matrix table and the "
            "total error against one uniform rank on every matrix at the same total."
        ),
        epilog=(
            "examples:\n"
            "  lowrank-blocks extract --base base/ --finetuned ft/ --lora-rank 8 --out adapter/\n"
            "  lowrank-blocks extract --base base/ --finetuned ft/ --budget 100000 \\\n"
            "      --structure grid:2 --pattern 'encoder.*.weight' --out gralora/\n"
            "\n"
            "Load it with PeftModel.from_pretrained(AutoModel.from_pretrained('base/'),\n"
            "'adapter/'). Structures PEFT cannot hold (ragged blocks, diagonal blocks,\n"
            "embeddings under GraLoRA) end with an error naming the nearest one it can."
        ),
    )
    parser.add_argument("--base", metavar="BASE", required=True, help="the base checkpoint")
    parser.add_argument("--finetuned", metavar="FT", required=True,
                        help="the fine-tuned checkpoint (same tensors)")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget", metavar="N", type=c.positive_int("budget"),
                        help="total adapter parameters")
    budget.add_argument("--lora-rank", metavar="R", type=c.positive_int("lora-rank"),
                        help="the total of a LoRA of rank R on every changed matrix")
    parser.add_argument("--structure", metavar="S", default="global",
                        help="global (LoRA, default) or grid:K (GraLoRA)")
    parser.add_argument("--objective", choices=("relative", "absolute"), default="relative",
                        help="sum of squared relative errors (default) or of squared errors")
    parser.add_argument("--pattern", metavar="GLOB", default=None,
                        help="only matrices whose name matches GLOB (default: all)")
    parser.add_argument("--out", metavar="ADAPTER_DIR", required=True,
                        help="the adapter directory to write")
    parser.add_argument("--force", action="store_true",
                        help="write into ADAPTER_DIR even if it is not empty")
    parser.add_argument("--fan-in-fan-out", choices=("auto", "true", "false"), default="auto",
                        help="weights stored (in, out), GPT-2's Conv1D: 'auto' (default) reads "
                             "the checkpoint's config.json")
    c.add_progress(parser)
    c.add_format(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..peft import extract_adapter
    from .allocate import print_allocation

    adapter = extract_adapter(
        args.finetuned, args.base, args.out, args.budget, lora_rank=args.lora_rank,
        structure=args.structure, objective=args.objective, pattern=args.pattern,
        overwrite=args.force, progress=c.show_progress(args),
        fan_in_fan_out={"auto": None, "true": True, "false": False}[args.fan_in_fan_out],
    )
    frame = adapter.to_frame()
    if args.csv:
        c.write_csv(frame)
    elif args.json:
        c.print_json({"matrices": c.records(frame), "summary": c.records(adapter.allocation.summary()),
                      "adapter": str(adapter.path), "config": adapter.config})
    else:
        kind = adapter.config["peft_type"]
        detail = (f"r = {adapter.config['r']}, gralora_k = {adapter.config['gralora_k']}"
                  if kind == "GRALORA" else f"r = {adapter.config['r']} with "
                  f"{len(adapter.config['rank_pattern'])} modules in rank_pattern")
        print_allocation(adapter.allocation,
                         f"{args.finetuned} − {args.base}: {len(frame)} changed matrices, "
                         f"{kind} adapter ({detail}), budget {adapter.allocation.budget:,}")
        print()
        print(f"wrote {adapter.path}/adapter_config.json and adapter_model.safetensors")
    return 0
