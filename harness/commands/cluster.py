"""Cluster profiles: write one for your site from what `sinfo` reports, or list the profiles.

`harness cluster init NAME` (on the cluster's login node) asks `sinfo` for the partitions (the default
one first, a `debug` role for a partition named like one), the GPUs, CPUs and memory of a node and each
partition's time limit, and writes `slurm/profiles/NAME.yaml` (`--out PATH` elsewhere; an existing file
is left alone unless `--force`). The account is a `CHANGE-ME` placeholder, refused by `harness run`
until you set it or pass `--account` (`--account NAME` here writes it). `--sinfo FILE` reads a saved
`sinfo -h -o '%P|%l|%G|%c|%m'` instead of asking. Where a partition's nodes differ (sinfo prints a line
per kind), it writes the least GPUs, CPUs and memory of the default partition's nodes, no GPU type where
the nodes' types differ or some are untyped, a comment beside each, and a warning line per such choice
(and per GPU partition whose nodes differ from the default one's) on stderr. Then: `harness run SPEC
--cluster NAME --dry-run`.
`harness cluster list` names the profiles and where they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "cluster"
HELP = "write a site's cluster profile from sinfo (init NAME), or list the profiles"


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["init", "list"], help="init: write a profile from sinfo; list: the profiles")
    parser.add_argument("name", nargs="?", help="with init: the profile's name (letters, digits, '-', '_')")
    parser.add_argument("--out", default=None, metavar="PATH", help="where to write it (default slurm/profiles/NAME.yaml)")
    parser.add_argument("--account", default=None, help="the SLURM account to write (default: a CHANGE-ME placeholder)")
    parser.add_argument("--sinfo", default=None, metavar="FILE", help="read sinfo's output from FILE instead of asking")
    parser.add_argument("--force", action="store_true", help="replace an existing profile file")


def run(args) -> int:
    from harness.commands import UsageError
    from harness.files import write_text_atomic
    from harness.launch.cluster import (PROFILES_DIR, ProfileError, SINFO_FORMAT, available_profiles, load_profile,
                                        profile_from_sinfo, read_sinfo)

    if args.action == "list":
        extra = [flag for flag, value in (("NAME", args.name), ("--out", args.out), ("--account", args.account),
                                          ("--sinfo", args.sinfo), ("--force", args.force)) if value]
        if extra:
            raise UsageError(f"cluster list takes no {', '.join(extra)} (those are for cluster init NAME)")
        broken = 0
        for name in available_profiles():
            try:
                profile = load_profile(name)
            except ProfileError as exc:  # listed, with what is wrong: the others still are
                broken += 1
                print(f"{name:<16} does not load: {exc}")
                continue
            print(f"{name:<16} {profile.source}  {profile.description}")
        return 1 if broken else 0
    if not args.name or not args.name.replace("-", "").replace("_", "").isalnum():
        raise UsageError("cluster init needs a NAME of letters, digits, '-' or '_', e.g. harness cluster init mysite")
    out = Path(args.out) if args.out else PROFILES_DIR / f"{args.name}.yaml"
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists; pass --force to replace it, or --out PATH")
    try:
        if args.sinfo:
            try:
                text = Path(args.sinfo).read_text()
            except OSError as exc:
                raise UsageError(f"--sinfo {args.sinfo}: {exc.strerror}; save it with sinfo -h -o '{SINFO_FORMAT}'") from None
        else:
            text = read_sinfo()
        content, warnings = profile_from_sinfo(args.name, text, account=args.account, where=str(out))
        write_text_atomic(out, content)
        profile = load_profile(out)  # what was written reads back as a valid profile
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    print(content, end="")
    print(f"wrote {out}: {len(profile.partitions)} partition(s), {profile.gpus_per_node} GPU(s) a node"
          + ("" if args.account else "; set the account (or pass --account to harness run)"), flush=True)
    for line in warnings:  # what sinfo left open and what was chosen, last so that it is seen
        print(f"warning: {line}", file=sys.stderr)
    return 0
