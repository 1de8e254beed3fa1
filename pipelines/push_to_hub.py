"""Push a saved DiffiTPipeline folder to the Hub, with a generated model card and the remote code plain diffusers
needs (the local folder is only read).

    python pipelines/push_to_hub.py --folder outputs/dit-fmnist --repo-id you/dit-fashion-mnist [--private]

Afterwards both load: `DiffiTPipeline.from_pretrained(repo_id)` (diffit_hf installed) and
`DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` (plain diffusers).
"""

from __future__ import annotations

import argparse

from diffit_hf.pipelines.hub import push_to_hub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True, help="a folder written by DiffiTPipeline.save_pretrained")
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--token", default=None, help="default: the token of `hf auth login`")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--no-exist-ok", dest="exist_ok", action="store_false", help="fail if the repo exists")
    args = parser.parse_args()
    url = push_to_hub(args.folder, args.repo_id, token=args.token, private=args.private, exist_ok=args.exist_ok)
    print(f"pushed {args.folder} to {url}")


if __name__ == "__main__":
    main()
