"""What every stage script shares: model and sampling flags, sharding, and error handling.

(The file names a run writes, shard files included, are aloe/runs.py's.)

Each script defines `main(argv=None)` decorated with `@cli_main`, so tests call it in-process and a
user sees one line and a non-zero exit for any error they can fix.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aloe.errors import AloeError
from aloe.logs import configure_logging, redact
from aloe.models import DTYPE_CHOICES, ModelOptions, ModelPool, SamplingParams

T = TypeVar("T")


def cli_main(main: Callable[..., int | None]) -> Callable[..., int]:
    """Run a script's main; an AloeError becomes `error: <message>` on stderr and exit status 1."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        configure_logging()
        try:
            return main(argv) or 0
        except AloeError as exc:
            print(f"error: {redact(str(exc))}", file=sys.stderr)
            return 1
        except OSError as exc:  # a disk that is full, a folder that cannot be written: the user's to fix
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"error: {redact(where + (exc.strerror or str(exc)))}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted: finished records are saved; re-run the same command to resume", file=sys.stderr)
            return 130

    return wrapper


class RecipeError(AloeError):
    """A `--config` recipe that cannot be read or sets an unknown or ill-typed flag."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors (bad choice, bad type) are AloeErrors: one line and exit 1 under cli_main.

    A parser given `add_recipe_arg` layers settings: defaults < the `--config` YAML < the command line.
    """

    def error(self, message: str):
        raise AloeError(f"{message} (see {self.prog} --help)")

    def parse_args(self, args: Sequence[str] | None = None, namespace=None) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        parsed = super().parse_args(argv, namespace)
        if getattr(parsed, "config", None):
            self._apply_recipe(parsed, argv)
        return parsed

    def _apply_recipe(self, parsed: argparse.Namespace, argv: list[str]) -> None:
        recipe = parsed.config
        actions = {a.dest: a for a in self._actions if a.dest not in ("help", "config")}
        # A key is a dest or any long flag name, with - or _ (a renamed flag keeps its old name as an alias).
        by_key = {dest: action for dest, action in actions.items()}
        for action in actions.values():
            for option in action.option_strings:
                if option.startswith("--"):
                    by_key[option[2:].replace("-", "_")] = action
        # argparse only fills defaults into attributes a namespace lacks, so a pre-filled namespace tells
        # which flags the command line really gave.
        given = super().parse_args(argv, argparse.Namespace(**dict.fromkeys(actions, _UNSET)))
        for key, value in load_recipe(recipe).items():
            action = by_key.get(str(key).replace("-", "_"))
            if action is None:
                raise RecipeError(f"{recipe}: {key}: unknown key; known keys: {', '.join(sorted(actions))}")
            if getattr(given, action.dest) is _UNSET:
                setattr(parsed, action.dest, _recipe_value(action, value, f"{recipe}: {key}"))


_UNSET = object()


def add_recipe_arg(parser: argparse.ArgumentParser) -> None:
    """`--config recipe.yaml`: a stage's settings from a file whose keys are its flag names (flags given win)."""
    parser.add_argument("--config", default=None, metavar="RECIPE",
                        help="recipe YAML; its keys are flag names (flags given here win)")


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe's mapping of flag names to values."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:  # an empty or truncated file: running on defaults would not be what it meant
        raise RecipeError(f"{path}: empty recipe; its keys are flag names with their values")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping of flag names to values, got {type(data).__name__}")
    return data


def _recipe_value(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {value!r}")
        return value
    if action.nargs in ("+", "*"):
        values = value if isinstance(value, list) else [value]
        return [_convert(action, item, where) for item in values]
    return _convert(action, value, where)


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    """A recipe value through the flag's own parser, given as text: it means what it would on the command line
    (YAML's 2.5 is no whole number, where int(2.5) would quietly make it 2)."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise RecipeError(f"{where}: expected one value, got a {type(value).__name__}")
    value = value if isinstance(value, str) else str(value)
    if action.type is not None:
        try:
            value = action.type(value)
        except argparse.ArgumentTypeError as exc:
            raise RecipeError(f"{where}: {exc}") from None
        except (TypeError, ValueError):
            raise RecipeError(f"{where}: invalid {getattr(action.type, '__name__', 'flag')} value {value!r}") from None
    if action.choices is not None and value not in action.choices:
        raise RecipeError(f"{where}: must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return value


def add_model_args(parser: argparse.ArgumentParser, roles: Sequence[str] = (), default: str = "embedded",
                   model_help: str = "model spec for every role") -> None:
    """--model plus one --<role>-model flag per role, each defaulting to --model."""
    group = parser.add_argument_group("models (spec: embedded, hf:<id-or-path>, a path, an alias, openai:/anthropic:/cohere:<model>)")
    group.add_argument("--model", default=default, help=f"{model_help} (default: {default})")
    for role in roles:
        group.add_argument(f"--{role}-model", default=None, help=f"model spec for the {role} role (default: --model)")
    group.add_argument("--base-url", default=None, help="OpenAI-compatible server URL (default: $OPENAI_BASE_URL)")
    group.add_argument("--batch-size", type=positive_int, default=8, help="local models: conversations per generate call")
    group.add_argument("--concurrency", type=positive_int, default=8, help="API models: requests in flight at once")
    group.add_argument("--timeout", type=positive_float, default=None,
                       help="API models: seconds one request may take before it is retried (default: 120)")
    add_dtype_arg(group)
    sampling = SamplingParams()  # the one home of the sampling defaults
    group.add_argument("--max-new-tokens", type=positive_int, default=sampling.max_new_tokens)
    group.add_argument("--temperature", type=non_negative_float, default=sampling.temperature)
    group.add_argument("--top-p", type=probability, default=sampling.top_p)
    group.add_argument("--seed", type=int, default=sampling.seed)
    group.add_argument("--cache", default=None, help="response cache file (default: responses.sqlite beside --output)")
    group.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")


def add_dtype_arg(parser) -> None:
    """--dtype, for every stage and harness that generates with local models."""
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="local models: generation dtype (auto: bf16 on GPUs and CPUs with native bf16, else fp32)")


def add_raw_text_arg(parser) -> None:
    """--raw-text, for stages whose prompts are one plain text a base model can continue."""
    parser.add_argument("--raw-text", action="store_true",
                        help="local models: continue the prompt as plain text instead of rendering it with the chat "
                             "template (untrained base models)")


def role_spec(args: argparse.Namespace, role: str) -> str:
    return getattr(args, f"{role.replace('-', '_')}_model", None) or args.model


def sampling_params(args: argparse.Namespace, **overrides) -> SamplingParams:
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)
    return params.replace(**overrides) if overrides else params


def model_pool(args: argparse.Namespace, output: str | Path) -> ModelPool:
    """A pool that loads each spec once, with the run's response cache unless --no-cache."""
    from aloe.cache import ResponseCache

    timeout = {"timeout_s": args.timeout} if args.timeout else {}  # else ModelOptions' default
    options = ModelOptions(batch_size=args.batch_size, concurrency=args.concurrency, base_url=args.base_url,
                           dtype=args.dtype, raw_text=getattr(args, "raw_text", False), **timeout)
    # Every role's spec (--model, --judge-model, ...) is checked before any model loads.
    specs = [value for name, value in vars(args).items() if name == "model" or name.endswith("_model")]
    pool = ModelPool(options, specs=[spec for spec in specs if isinstance(spec, str)])
    if not args.no_cache:
        pool.cache = ResponseCache(args.cache or Path(output).parent / "responses.sqlite")
    return pool


OVERWRITE_HELP = "start the output over instead of resuming"


def add_run_args(parser, work: str, *, output: str | None = None, output_help: str | None = None,
                 required: bool = False, group_size: int | None = None, group_help: str | None = None,
                 shard_help: str | None = None, overwrite_help: str = OVERWRITE_HELP) -> None:
    """The flags of a resumable, shardable stage: --group-size (when it has one), --shard, --output, --overwrite.

    `work` names what the stage splits over shards ("pair", "prompt"); `output` is --output's default.
    """
    if group_size is not None:
        parser.add_argument("--group-size", type=positive_int, default=group_size, help=group_help)
    parser.add_argument("--shard", type=shard_arg, default=None,
                        help=shard_help or f"i/n: only every n-th {work} starting at i, into <output stem>.shard-i-of-n"
                                           "<output suffix>")
    parser.add_argument("--output", type=output_file, default=output, required=required, help=output_help)
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)


def _number(name: str, convert: Callable[[Any], T], accepts: Callable[[T], bool], wanted: str) -> Callable[[Any], T]:
    """An argparse type: `convert`, then refuse a value `accepts` rejects (NaN fails every comparison)."""

    def parse(text):
        value = convert(text)
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = name  # argparse names the type in "invalid <name> value"
    return parse


positive_int = _number("positive_int", int, lambda value: value >= 1, "at least 1")
non_negative_int = _number("non_negative_int", int, lambda value: value >= 0, "at least 0")
positive_float = _number("positive_float", float, lambda value: 0 < value < math.inf, "a number above 0")
non_negative_float = _number("non_negative_float", float, lambda value: 0 <= value < math.inf,
                             "a number of at least 0")
probability = _number("probability", float, lambda value: 0 < value <= 1, "above 0 and at most 1")  # --top-p
share = _number("share", float, lambda value: 0 <= value <= 1, "from 0 to 1")
fraction = _number("fraction", float, lambda value: 0 <= value < 1, "at least 0 and below 1")


def output_file(text: str) -> str:
    """An output file path that can be created: checked when the flag is parsed, before any work starts."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file path")
    _check_creatable(path)
    return text


def output_folder(text: str) -> str:
    """An output folder that can be created (or exists as a folder)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file; give a folder path")
    _check_creatable(path)
    return text


def _check_creatable(path: Path) -> None:
    # The nearest existing ancestor decides: it must be a folder this process may write into.
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{path} cannot be created: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK) and not path.exists():
                raise argparse.ArgumentTypeError(f"{path} cannot be created: {parent} is not writable")
            return


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
