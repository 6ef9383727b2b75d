"""What every stage script shares: model and sampling flags, sharding, and error handling.

(The file names a run writes, shard files included, are aloe/runs.py's.)

Each script defines `main(argv=None)` decorated with `@cli_main`, so tests call it in-process and a
user sees one line and a non-zero exit for any error they can fix.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from aloe.errors import AloeError
from aloe.models import DTYPE_CHOICES, ModelOptions, ModelPool, SamplingParams

T = TypeVar("T")


def cli_main(main: Callable[..., int | None]) -> Callable[..., int]:
    """Run a script's main; an AloeError becomes `error: <message>` on stderr and exit status 1."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        for noisy in ("httpx", "httpcore", "openai", "anthropic", "urllib3", "sentence_transformers"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        try:
            return main(argv) or 0
        except AloeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted: finished records are saved; re-run the same command to resume", file=sys.stderr)
            return 130

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors (bad choice, bad type) are AloeErrors: one line and exit 1 under cli_main."""

    def error(self, message: str):
        raise AloeError(f"{message} (see {self.prog} --help)")


def add_model_args(parser: argparse.ArgumentParser, roles: Sequence[str] = (), default: str = "embedded") -> None:
    """--model plus one --<role>-model flag per role, each defaulting to --model."""
    group = parser.add_argument_group("models (spec: embedded, hf:<id-or-path>, a path, an alias, openai:/anthropic:/cohere:<model>)")
    group.add_argument("--model", default=default, help=f"model spec for every role (default: {default})")
    for role in roles:
        group.add_argument(f"--{role}-model", default=None, help=f"model spec for the {role} role (default: --model)")
    group.add_argument("--base-url", default=None, help="OpenAI-compatible server URL (default: $OPENAI_BASE_URL)")
    group.add_argument("--batch-size", type=positive_int, default=8, help="local models: conversations per generate call")
    group.add_argument("--concurrency", type=positive_int, default=8, help="API models: requests in flight at once")
    add_dtype_arg(group)
    sampling = SamplingParams()  # the one home of the sampling defaults
    group.add_argument("--max-new-tokens", type=positive_int, default=sampling.max_new_tokens)
    group.add_argument("--temperature", type=float, default=sampling.temperature)
    group.add_argument("--top-p", type=float, default=sampling.top_p)
    group.add_argument("--seed", type=int, default=sampling.seed)
    group.add_argument("--cache", default=None, help="response cache file (default: responses.sqlite beside --output)")
    group.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")


def add_dtype_arg(parser) -> None:
    """--dtype, for every stage and harness that generates with local models."""
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="local models: generation dtype (auto: bf16 on GPUs and CPUs with native bf16, else fp32)")


def role_spec(args: argparse.Namespace, role: str) -> str:
    return getattr(args, f"{role.replace('-', '_')}_model", None) or args.model


def sampling_params(args: argparse.Namespace, **overrides) -> SamplingParams:
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)
    return params.replace(**overrides) if overrides else params


def model_pool(args: argparse.Namespace, output: str | Path) -> ModelPool:
    """A pool that loads each spec once, with the run's response cache unless --no-cache."""
    from aloe.cache import ResponseCache

    options = ModelOptions(batch_size=args.batch_size, concurrency=args.concurrency, base_url=args.base_url,
                           dtype=args.dtype)
    cache = None
    if not args.no_cache:
        cache = ResponseCache(args.cache or Path(output).parent / "responses.sqlite")
    return ModelPool(options, cache)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def shard_arg(text: str) -> tuple[int, int]:
    """Parse `--shard i/n` (0-based i)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n such as 0/4, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"need 0 <= i < n, got {text!r}")
    return index, count


def take_shard(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """Every n-th item starting at i: shards are disjoint and together cover the input."""
    if shard is None:
        return list(items)
    index, count = shard
    return list(items[index::count])
