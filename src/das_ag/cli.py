"""das-ag on the command line: generate, recipe, download, app.

The CLI only translates flags into a GenerationConfig and events into a progress bar; every
decision about images lives in the engine. Anything a user can get wrong ends in one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from . import __version__
from .config import DTYPES, GUIDANCE, INTERPOLATIONS, LEVELS, PRESETS, GenerationConfig
from .errors import DasAgError
from .schedules import SCHEDULE_KINDS, Schedule

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="das-ag", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"das-ag {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = commands.add_parser("generate", help="make one image from text")
    what = gen.add_argument_group("what to make")
    what.add_argument("--prompt", action="append", default=[], metavar="TEXT[:WEIGHT]",
                      help="a prompt to steer towards (repeatable); a negative WEIGHT repels")
    what.add_argument("--negative", action="append", default=[], metavar="TEXT[:WEIGHT]",
                      help="a prompt to steer away from (repeatable)")
    what.add_argument("--guidance", choices=list(GUIDANCE), help="aesthetic term: reward (DAS-AG), penalty (DAS-rAG) or off (DAS)")
    what.add_argument("--aesthetic-weight", type=_finite_float, metavar="W", help="the aesthetic weight the schedule reaches")
    what.add_argument("--aesthetic-start", type=_finite_float, metavar="W", help="the aesthetic weight at step 0")
    what.add_argument("--aesthetic-schedule", choices=SCHEDULE_KINDS)
    what.add_argument("--clip-weight", type=_finite_float, metavar="W", help="weight of the text term (0 turns it off)")
    what.add_argument("--from-png", metavar="FILE.png", help="start from the recipe in a das-ag PNG; other flags override it")
    what.add_argument("--preset", choices=list(PRESETS), help="paper: the published settings; quick: a fast look")

    how = gen.add_argument_group("optimisation")
    how.add_argument("--steps", type=_positive_int)
    how.add_argument("--batch", type=_positive_int, dest="augment_copies", metavar="N", help="augmented copies per step")
    how.add_argument("--resolution", type=_positive_int, metavar="PX")
    how.add_argument("--lr", type=_finite_float)
    how.add_argument("--levels", choices=LEVELS)
    how.add_argument("--interpolation", choices=INTERPOLATIONS)
    how.add_argument("--tv", type=_finite_float, dest="tv_weight", metavar="W", help="total-variation weight")
    how.add_argument("--l1", type=_finite_float, dest="l1_weight", metavar="W")
    how.add_argument("--seed", type=_seed)
    how.add_argument("--deterministic", action="store_true", default=None,
                     help="bit-for-bit repeatable on CUDA too (the CPU always is)")
    how.add_argument("--device", metavar="auto|cpu|cuda[:N]")
    how.add_argument("--dtype", choices=DTYPES, help="encoder precision")

    models = gen.add_argument_group("models and output")
    models.add_argument("--clip-model", metavar="NAME|PATH", help="default: $CLIP_MODEL_PATH, else ViT-L/14")
    models.add_argument("--aesthetic-model", metavar="PATH", help="default: $AESTHETIC_PREDICTOR_PATH, else the download")
    models.add_argument("--out", metavar="FILE.png", help="default: outputs/<prompt>-<method>-seed<S>.png")
    models.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    models.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(run=cmd_generate)

    recipe = commands.add_parser("recipe", help="print the recipe embedded in a das-ag PNG")
    recipe.add_argument("png", metavar="FILE.png")
    recipe.set_defaults(run=cmd_recipe)

    app = commands.add_parser("app", help="open the studio in the browser (Streamlit)")
    app.add_argument("streamlit_args", nargs=argparse.REMAINDER, help="passed on to `streamlit run`")
    app.set_defaults(run=cmd_app)

    download = commands.add_parser("download", help="fetch and verify the CLIP and aesthetic weights")
    download.add_argument("--clip-model", metavar="NAME", help="default: $CLIP_MODEL_PATH, else ViT-L/14")
    download.set_defaults(run=cmd_download)
    return parser


# -- generate ---------------------------------------------------------------------------------
def config_from_args(args: argparse.Namespace) -> GenerationConfig:
    from .png import config_from_png
    from .prompts import parse_prompt

    if args.from_png:
        config = config_from_png(args.from_png)
        if args.preset:
            config = GenerationConfig.from_preset(args.preset, prompts=config.prompts)
    else:
        prompts = tuple(parse_prompt(p) for p in args.prompt) + tuple(parse_prompt(n, negative=True) for n in args.negative)
        if not any(not p.is_negative for p in prompts):
            raise DasAgError("give at least one --prompt to steer towards")
        base = PRESETS.get(args.preset, {}) if args.preset else {}
        config = GenerationConfig(**{**base, "prompts": prompts})
    if args.from_png and (args.prompt or args.negative):
        prompts = tuple(parse_prompt(p) for p in args.prompt) + tuple(parse_prompt(n, negative=True) for n in args.negative)
        config = config.replace(prompts=prompts)

    changes = {
        name: getattr(args, name)
        for name in ("guidance", "clip_weight", "steps", "augment_copies", "resolution", "lr", "levels",
                     "interpolation", "tv_weight", "l1_weight", "seed", "deterministic", "device", "dtype")
        if getattr(args, name) is not None
    }
    aesthetic = config.aesthetic
    if args.aesthetic_schedule is not None:
        aesthetic = Schedule(args.aesthetic_schedule, aesthetic.start, aesthetic.end, aesthetic.rate)
    if args.aesthetic_weight is not None:
        if args.aesthetic_weight < 0:
            raise DasAgError("--aesthetic-weight must be >= 0; use --guidance penalty to push the score down")
        start = args.aesthetic_weight if aesthetic.kind == "constant" else aesthetic.start
        aesthetic = Schedule(aesthetic.kind, start, args.aesthetic_weight, aesthetic.rate)
    if args.aesthetic_start is not None:
        aesthetic = Schedule(aesthetic.kind, args.aesthetic_start, aesthetic.end, aesthetic.rate)
    changes["aesthetic"] = aesthetic
    return config.replace(**changes)


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import determinism
    from .engine import synthesize
    from .models import load_models, resolve_device
    from .png import next_free_path

    config = config_from_args(args)
    out = Path(args.out) if args.out else next_free_path(config)
    if out.suffix.lower() != ".png":
        raise DasAgError(f"--out {out} must end in .png")
    if out.exists() and not args.overwrite:
        raise DasAgError(f"{out} already exists; pass --overwrite or choose another --out")
    device = resolve_device(config.device)
    _say(args, f"loading models on {device} ...")
    models = load_models(args.clip_model, args.aesthetic_model, config.device)
    run = synthesize(config, models)
    for warning in run.warnings:
        print(f"das-ag: warning: {warning}", file=sys.stderr)
    _say(args, f"{config.method}: {config.steps} steps at {config.resolution} px, seed {config.seed}, "
               f"{determinism.mode(device, config.deterministic)}")
    interrupted = False
    with tqdm(total=config.steps, unit="step", disable=args.quiet, leave=False, file=sys.stderr) as bar:
        try:
            for event in run:
                neg = "" if event.clip_negative is None else f" clip-={event.clip_negative:.3f}"
                bar.set_postfix_str(f"loss={event.loss:.4f} clip+={event.clip_positive:.3f}{neg} aes={event.aesthetic_score:.2f}")
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True  # keep what was made: the image so far is saved below
            run.stop()
    result = run.result()
    path = result.save(out, overwrite=args.overwrite)
    s = result.scores
    neg = "" if s.clip_negative is None else f"  clip- {s.clip_negative:.4f}"
    print(f"saved {path}  {config.method}  {result.steps_done} steps  {result.elapsed:.1f} s  "
          f"clip+ {s.clip_positive:.4f}{neg}  aesthetic {result.initial_scores.aesthetic:.3f} -> {s.aesthetic:.3f}")
    if result.status in ("non_finite", "failed"):
        print(f"das-ag: error: {result.message}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_INTERRUPTED if interrupted else 0


def cmd_recipe(args: argparse.Namespace) -> int:
    from .png import read_recipe

    print(json.dumps(read_recipe(args.png), indent=2, sort_keys=True, ensure_ascii=False))
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    import os

    app_path = Path(__file__).with_name("app.py")
    argv = [sys.executable, "-m", "streamlit", "run", str(app_path), *args.streamlit_args]
    os.execv(sys.executable, argv)  # the studio replaces this process; Ctrl-C stops it
    return 0  # not reached


def cmd_download(args: argparse.Namespace) -> int:
    from . import weights

    clip_path = weights.resolve_clip(args.clip_model)
    print(f"CLIP: {clip_path} (sha256 {weights.verified_sha256(clip_path)[:16]}...)")
    head_path = weights.resolve_aesthetic()
    print(f"aesthetic head: {head_path} (sha256 {weights.verified_sha256(head_path)[:16]}...)")
    return 0


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from .weights import load_environment

    load_environment()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["app"] and argv[1:2] not in (["-h"], ["--help"]):
        # Everything after `app` belongs to `streamlit run` (argparse would take --server.* as ours).
        return cmd_app(argparse.Namespace(streamlit_args=argv[1:]))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: argparse has said its line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.run(args)
    except DasAgError as exc:
        print(f"das-ag: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("das-ag: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
