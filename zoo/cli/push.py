"""``zoo push DIR org/name``: publish a zoo checkpoint directory (e.g. a fine-tuned model) on the Hub."""

from __future__ import annotations

import argparse

from zoo.checkpoint import push_to_hub

HELP = "upload a zoo checkpoint directory to the Hugging Face Hub (checked before upload)"
EXAMPLES = """  zoo push runs/my-finetune/model my-org/my-potential
  zoo push runs/my-finetune/model my-org/my-potential --private --message "fine-tuned on my data"
  # then anyone can: zoo.load("hf-hub:my-org/my-potential@<commit>")
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="checkpoint directory (config.json, model.safetensors, README.md)")
    parser.add_argument("repo_id", help="Hub repo, org/name (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--message", default="Upload zoo checkpoint", help="commit message")
    parser.add_argument("--token", help="Hugging Face token (default: HF_TOKEN / login)")


def run(args: argparse.Namespace) -> int:
    commit = push_to_hub(
        args.directory, args.repo_id, token=args.token, private=args.private, commit_message=args.message
    )
    print(f"pushed {args.directory} to {args.repo_id}; load it with zoo.load('hf-hub:{args.repo_id}@{commit}')")
    return 0
