"""`playpulse`: one command for every service and admin task.

Subcommands import their service lazily, so `playpulse ingest` never loads the API's code.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent


def _stack(action: str) -> int:
    script = REPO_DIR / "deploy" / "stack.sh"
    if not script.exists():
        print(f"playpulse {action} needs a source checkout (no {script})", file=sys.stderr)
        return 2
    return subprocess.call(["bash", str(script), action])


async def _playbacks(args: argparse.Namespace) -> int:
    from redis.asyncio import Redis

    from ingest.registry import Playback, PlaybackRegistry, RegistryConflict
    from ingest.settings import IngestSettings

    settings = IngestSettings.from_env()
    redis = Redis.from_url(settings.redis_url)
    registry = PlaybackRegistry(redis, cache_s=0.001)
    try:
        if args.playbacks_cmd == "add":
            playback = Playback(args.playback_id, args.creator, args.asset, args.stream)
            try:
                await registry.put(playback)
            except RegistryConflict as exc:
                print(exc, file=sys.stderr)
                return 1
            print(f"registered {args.playback_id}")
        elif args.playbacks_cmd == "remove":
            if not await registry.remove(args.playback_id):
                print(f"no such playback: {args.playback_id}", file=sys.stderr)
                return 1
            print(f"removed {args.playback_id}")
        elif args.playbacks_cmd == "add-demo":
            from ingest.fleet import CATALOGUE

            for e in CATALOGUE:
                await registry.add(Playback(e.playback_id, e.creator_id, e.asset_id, e.stream_id))
            print(f"registered {len(CATALOGUE)} demo playbacks")
        else:
            async for p in registry.each():
                print(
                    f"{p.playback_id}\tcreator={p.creator_id or '-'}\t"
                    f"asset={p.asset_id or '-'}\tstream={p.stream_id or '-'}"
                )
    finally:
        await redis.aclose()
    return 0


async def _keys(args: argparse.Namespace) -> int:
    from redis.asyncio import Redis

    from api.auth import create_key, list_keys, revoke_key
    from api.settings import ApiSettings

    redis = Redis.from_url(ApiSettings.from_env().redis_url)
    try:
        if args.keys_cmd == "create":
            try:
                key_id, secret = await create_key(
                    redis,
                    kind=args.kind,
                    origins=args.origin or (),
                    creator_id=args.creator,
                    name=args.name,
                )
            except ValueError as exc:
                print(f"playpulse keys create: {exc}", file=sys.stderr)
                return 2
            print(f"id:     {key_id}\nsecret: {secret}\n(the secret is shown once: store it now)")
        elif args.keys_cmd == "revoke":
            if not await revoke_key(redis, args.key_id):
                print(f"no such key: {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
        else:
            for key in await list_keys(redis):
                info = key.to_json()
                print("\t".join(f"{k}={v}" for k, v in info.items()))
    finally:
        await redis.aclose()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="playpulse", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ingest", help="run the beacon collector (PLAYPULSE_INGEST_ADDR)")
    sub.add_parser("aggregate", help="run an aggregator worker")
    sub.add_parser("api", help="run the query API (PLAYPULSE_API_ADDR)")
    sub.add_parser("simulate", help="simulated players posting beacons (see simulate --help)")
    sub.add_parser("up", help="start the whole local stack in the background")
    sub.add_parser("down", help="stop the whole local stack")
    keys = sub.add_parser(
        "keys", help="API keys: private, CORS with allowed origins, or admin (/api/admin only)"
    )
    keys_sub = keys.add_subparsers(dest="keys_cmd", required=True)
    create = keys_sub.add_parser("create")
    create.add_argument("--kind", choices=("private", "cors", "admin"), default="private")
    create.add_argument("--origin", action="append", help="allowed origin of a CORS key")
    create.add_argument("--creator", help="scope the key to one creator's data")
    create.add_argument("--name")
    keys_sub.add_parser("list")
    revoke = keys_sub.add_parser("revoke")
    revoke.add_argument("key_id")
    pb = sub.add_parser(
        "playbacks", help="the playback registry: playback -> creator, asset/stream"
    )
    pbs = pb.add_subparsers(dest="playbacks_cmd", required=True)
    add = pbs.add_parser("add")
    add.add_argument("playback_id")
    add.add_argument("--creator")
    target = add.add_mutually_exclusive_group()
    target.add_argument("--asset")
    target.add_argument("--stream")
    rm = pbs.add_parser("remove")
    rm.add_argument("playback_id")
    pbs.add_parser("list")
    pbs.add_parser("add-demo", help="register the simulated players' catalogue")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:  # the simulator parses its own options
        from ingest.simulate import main as simulate_main

        sys.exit(simulate_main(argv[1:]))
    args = _parser().parse_args(argv)
    if args.cmd == "ingest":
        from ingest.app import main as ingest_main

        ingest_main()
    elif args.cmd == "aggregate":
        from aggregator.worker import main as aggregate_main

        aggregate_main()
    elif args.cmd == "api":
        from api.app import main as api_main

        api_main()
    elif args.cmd == "keys":
        sys.exit(asyncio.run(_keys(args)))
    elif args.cmd in ("up", "down"):
        sys.exit(_stack(args.cmd))
    elif args.cmd == "playbacks":
        sys.exit(asyncio.run(_playbacks(args)))
    else:  # pragma: no cover - argparse only lets the subcommands above through
        raise AssertionError(args.cmd)


if __name__ == "__main__":
    main()
