"""das-ag on the command line: generate, compare, batch, report, recipe, download, app.

The CLI only translates flags into a GenerationConfig and events into a progress bar; every
decision about images lives in the engine. Anything a user can get wrong ends in one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from . import __version__
from .config import PRESETS, GenerationConfig
from .errors import DasAgError, first_line
from .schedules import SCHEDULE_KINDS, Schedule
from .settings import replace_settings
from .studio.files import MAX_UPLOAD_MB

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _whole_number(minimum: int, words: str):
    """An argparse type for whole numbers of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {words}, got {value}")
        return value

    return parse


_positive_int = _whole_number(1, "greater than 0")
_seed = _whole_number(0, "0 or more")


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 0 separated by commas, got {text!r}")
    return seeds


def _size(text: str) -> tuple[int, int]:
    """"640x384" -> (640, 384): width by height, in pixels."""
    width, sep, height = text.lower().replace(" ", "").partition("x")
    try:
        if not sep:
            raise ValueError
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 640x384, got {text!r}") from None


def _add_prompt_arguments(group) -> None:
    group.add_argument("--prompt", action="append", default=[], metavar="TEXT[:WEIGHT]",
                       help="a prompt to steer towards (repeatable); a negative WEIGHT repels")
    group.add_argument("--negative", action="append", default=[], metavar="TEXT[:WEIGHT]",
                       help="a prompt to steer away from (repeatable)")
    group.add_argument("--image-prompt", action="append", default=[], metavar="FILE[:WEIGHT]",
                       help="a picture to steer towards (repeatable); a negative WEIGHT repels")


def _add_settings_arguments(parser, *, skip: tuple[str, ...] = ()) -> None:
    """A flag for every setting of GenerationConfig (settings.py describes them), of every
    canvas and term with settings of its own, plus the aesthetic weight's short forms and the preset."""
    from .canvases import CANVASES
    from .objectives import TERMS
    from .settings import add_arguments

    add_arguments(parser, GenerationConfig, skip=skip)
    for name, canvas in CANVASES.items():  # --strokes, --segments, ... (or --<canvas>-<setting>)
        if canvas.Settings is not None:
            add_arguments(parser, canvas.Settings, prefix=f"{name}_")
    for name, term in TERMS.items():  # terms with settings of their own: --<term>-<setting>
        if term.Settings is not None:
            add_arguments(parser, term.Settings, prefix=f"{name}_")
    shape = next(g for g in parser._action_groups if g.title == "optimisation")
    shape.add_argument("--size", type=_size, metavar="WxH",
                       help="an image of any aspect ratio, e.g. 640x384 (instead of --resolution's square)")
    what = next(g for g in parser._action_groups if g.title == "guidance")
    what.add_argument("--aesthetic-weight", type=_finite_float, metavar="W", help="the aesthetic weight the schedule reaches")
    what.add_argument("--aesthetic-start", type=_finite_float, metavar="W", help="the aesthetic weight at step 0")
    what.add_argument("--aesthetic-schedule", choices=SCHEDULE_KINDS, help="the aesthetic schedule's form")
    what.add_argument("--preset", choices=list(PRESETS),
                      help="paper: the published settings; quick: a fast look; fast-cpu: ViT-B/32 guides and "
                           "ViT-L/14 scores every 10th step (minutes, not an hour, on a laptop CPU); sketch: a black line sketch "
                           "(strokes, CLIPasso-like); clipdraw: a colour drawing of many strokes (CLIPDraw-like)")


def _method_list(text: str) -> list[str]:
    from .experiments import parse_method

    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected method names separated by commas")
    for name in names:
        try:
            parse_method(name)
        except DasAgError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers separated by commas, got {text!r}")
    return values


SLIDER_RESOLUTION_HELP = "the pictures' side (default: the base model's own: 512 for SD 1.x, 768 for SD 2.x-768, 1024 for SDXL)"


def _add_slider_model_arguments(parser) -> None:
    parser.add_argument("--config", metavar="DIR", help="for a single-file --base that is not SD 1.x (das-ag has "
                        "SD 1.x's configs): a local diffusers folder of its family")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]")
    parser.add_argument("--prediction-type", choices=["auto", "epsilon", "v_prediction"], default="auto",
                        help="what the UNet predicts (auto: its config says; an SD 2.x single file is taken for v)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="of the Stable Diffusion and CLIP models (auto: bf16 on a GPU that has it, else fp32)")
    parser.add_argument("--clip-model", metavar="NAME|PATH", help="default: $CLIP_MODEL_PATH, else ViT-L/14")
    parser.add_argument("--aesthetic-model", metavar="PATH", help="default: $AESTHETIC_PREDICTOR_PATH, else the download")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _images_per_step(text: str) -> int | None:
    if text == "auto":
        return None
    return _positive_int(text)


def _add_model_arguments(parser, *, batches: bool = False):
    models = parser.add_argument_group("models and output")
    if batches:
        models.add_argument("--images-per-step", type=_images_per_step, default=None, metavar="N|auto",
                            help="images that share each encoder step (default auto: as many as fit in memory); "
                                 "DAS, DAS-AG and DAS-rAG of a seed run together")
    models.add_argument("--clip-model", action="append", metavar="NAME|PATH|open_clip:ARCH@TAG[:WEIGHT]",
                        help="the CLIP to use (default: $CLIP_MODEL_PATH, else ViT-L/14); repeat it for an ensemble, "
                             "each with a weight (0: only for the aesthetic head)")
    models.add_argument("--aesthetic-model", metavar="PATH", help="default: $AESTHETIC_PREDICTOR_PATH, else the download")
    models.add_argument("--quiet", action="store_true", help="no progress bar")
    return models


def _is_ensemble(sources: list[str] | None) -> bool:
    """Whether --clip-model asks for more than the one CLIP a recipe records as its model: several,
    a weight, or an open_clip model (which the config then carries, so --from-png re-creates it)."""
    from .clip_models import parse_encoder

    specs = [parse_encoder(s) for s in sources or ()]
    return len(specs) > 1 or any(s.weight != 1 or s.is_open_clip for s in specs)


def load_run_models(args: argparse.Namespace, configs, device: str):
    """The models `configs` run on: their ensemble, or the one CLIP of --clip-model; the head is
    required unless every config leaves the aesthetic term out (guidance off)."""
    from .models import load_models

    ensembles = {c.clip_models for c in configs}
    if len(ensembles) > 1:
        raise DasAgError("the images of one command must use the same CLIP models")
    ensemble = ensembles.pop()
    single = args.clip_model[0] if args.clip_model and not ensemble else None
    return load_models(ensemble or single, args.aesthetic_model, device,
                       need_head=any(c.guidance != "off" for c in configs))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="das-ag", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"das-ag {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = commands.add_parser("generate", help="make one image from text")
    what = gen.add_argument_group("what to make")
    _add_prompt_arguments(what)
    what.add_argument("--from-png", metavar="FILE.png", help="start from the recipe in a das-ag PNG; other flags override it")
    what.add_argument("--from-svg", dest="from_png", metavar="FILE.svg",
                      help="start from the recipe in a das-ag SVG (a strokes drawing); other flags override it")
    _add_settings_arguments(gen)
    models = _add_model_arguments(gen)
    models.add_argument("--out", metavar="FILE.png", help="default: outputs/<prompt>-<method>-seed<S>.png")
    models.add_argument("--animation", metavar="FILE.gif|.webp|.mp4", help="also save the image forming, as an animation")
    models.add_argument("--animation-every", type=_positive_int, metavar="N",
                        help="a frame every N steps (default: about 50 frames in all)")
    models.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    gen.set_defaults(run=cmd_generate)

    compare = commands.add_parser("compare", help="DAS vs DAS-AG vs DAS-rAG with identical settings and seeds")
    what = compare.add_argument_group("what to make")
    _add_prompt_arguments(what)
    what.add_argument("--prompts", choices=["reference"], dest="prompt_source",
                      help="reference: the four published prompts with the shared negative prompt")
    what.add_argument("--seeds", type=_seed_list, default=[0], metavar="0,1,2", help="default: 0")
    what.add_argument("--methods", type=_method_list, default=None, metavar="DAS,DAS-AG,...",
                      help="default DAS,DAS-AG,DAS-rAG; a mark adds a signed term: DAS-CAN (style ambiguity "
                           "rewarded), DAS-AG-CAN, DAS-rCAN ...")
    _add_settings_arguments(compare, skip=("guidance", "seed"))
    models = _add_model_arguments(compare, batches=True)
    models.add_argument("--out", required=True, metavar="DIR", help="folder for the images, tables, chart and sheet")
    models.add_argument("--evaluate", action="append", default=[], metavar="NAME",
                        help="an extra, held-out evaluator: aesthetic-v2.5 (opt-in, AGPL-3.0)")
    compare.set_defaults(run=cmd_compare)

    batch = commands.add_parser("batch", help="run a plan of prompts x seeds x methods x variants (resumable)")
    batch.add_argument("plan", metavar="PLAN.toml")
    batch.add_argument("--out", metavar="DIR", help="default: the plan's `out`, else a folder named after it")
    _add_model_arguments(batch, batches=True)
    batch.set_defaults(run=cmd_batch)

    report = commands.add_parser("report", help="rebuild the tables, chart and contact sheet from a folder of PNGs")
    report.add_argument("folder", metavar="DIR")
    report.add_argument("--evaluate", action="append", default=[], metavar="NAME")
    report.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]")
    report.set_defaults(run=cmd_report)

    recipe = commands.add_parser("recipe", help="print the recipe embedded in a das-ag PNG or SVG, or a slider LoRA")
    recipe.add_argument("png", metavar="FILE.png|FILE.svg|LORA.safetensors")
    recipe.set_defaults(run=cmd_recipe)

    centroids = commands.add_parser("centroids", help="style centroids of your own pictures, for --centroids")
    centroid_commands = centroids.add_subparsers(dest="centroids_command", required=True, parser_class=_Parser)
    build = centroid_commands.add_parser("build", help="embed every picture in a folder and cluster them into k styles")
    build.add_argument("folder", metavar="DIR")
    build.add_argument("--k", type=_whole_number(2, "2 or more"), default=5, help="number of styles (default 5)")
    build.add_argument("--out", required=True, metavar="FILE.npz")
    build.add_argument("--seed", type=_seed, default=0, help="the k-means seed (default 0)")
    build.add_argument("--batch-size", type=_positive_int, default=16, metavar="N", help="pictures per encoder batch")
    build.add_argument("--clip-model", metavar="NAME|PATH", help="default: $CLIP_MODEL_PATH, else ViT-L/14")
    build.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]")
    build.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(run=cmd_centroids_build)

    slider = commands.add_parser("slider", help="train and use an aesthetic slider LoRA for Stable Diffusion (extra: slider)")
    slider_commands = slider.add_subparsers(dest="slider_command", required=True, parser_class=_Parser)
    train = slider_commands.add_parser("train", help="train a LoRA that raises (or lowers) the aesthetic score")
    train.add_argument("--base", required=True, metavar="PATH", help="a local Stable Diffusion checkpoint (diffusers folder or .safetensors)")
    train.add_argument("--sign", choices=["reward", "penalty"], default="reward", help="raise (reward) or lower (penalty) the score")
    train.add_argument("--steps", type=_positive_int, default=500)
    train.add_argument("--lr", type=_finite_float, default=1e-4)
    train.add_argument("--rank", type=_positive_int, default=4)
    train.add_argument("--alpha", type=_finite_float, default=4.0)
    train.add_argument("--resolution", type=_positive_int, default=None, metavar="PX", help=SLIDER_RESOLUTION_HELP)
    train.add_argument("--inference-steps", type=_whole_number(2, "2 or more"), default=26)
    train.add_argument("--grad-steps", type=_positive_int, default=1, metavar="K",
                       help="differentiate through the last K UNet calls (DRaFT-K); K x the activations' memory")
    train.add_argument("--guidance-scale", type=_finite_float, default=5.0)
    train.add_argument("--aesthetic-weight", type=_finite_float, default=1.0)
    train.add_argument("--clip-weight", type=_finite_float, default=0.0, help="CLIP similarity to the prompt (stays on-prompt)")
    train.add_argument("--anchor-weight", type=_finite_float, default=0.0,
                       help="keep the LoRA's predictions near the base model's (DRaFT+), against reward hacking")
    train.add_argument("--symmetric", action="store_true",
                       help="also train the LoRA at weight -1 to move the score the other way (twice the time per step)")
    train.add_argument("--ambiguity", choices=["reward", "penalty", "off"], default="off",
                       help="add the style-ambiguity term (see Creativity) to the reward")
    train.add_argument("--ambiguity-weight", type=_finite_float, default=0.25)
    train.add_argument("--styles", default="wikiart", metavar="wikiart|FILE.txt")
    train.add_argument("--prompts", metavar="FILE.txt", help="training prompts, one per line (default: a built-in general list)")
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument("--checkpoint-every", type=_positive_int, default=50, metavar="N")
    train.add_argument("--scorer", metavar="SCORER.safetensors",
                       help="train against a latent scorer (das-ag slider scorer) instead of the image-space score")
    train.add_argument("--kohya", metavar="FILE.safetensors", help="also write the LoRA in kohya's format (ComfyUI, A1111)")
    train.add_argument("--preview-every", type=_whole_number(0, "0 (off) or more"), default=100, metavar="N",
                       help="every N steps and at the end, a scored grid of the LoRA at -1/0/+1 beside --out (0: none)")
    train.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute the UNet's and VAE's activations in the backward: less memory, slower steps")
    train.add_argument("--out", required=True, metavar="FILE.safetensors")
    _add_slider_model_arguments(train)
    train.set_defaults(run=cmd_slider_train)

    sample = slider_commands.add_parser("sample", help="a grid of images at several LoRA weights, each scored")
    sample.add_argument("--base", required=True, metavar="PATH")
    sample.add_argument("--lora", required=True, metavar="FILE.safetensors")
    sample.add_argument("--weights", type=_float_list, default=[-1.0, 0.0, 1.0], metavar="W,W,...",
                        help="LoRA weights, the grid's columns (default -1,0,1; write --weights=-1,0,1 when the first is negative)")
    sample.add_argument("--prompt", required=True)
    sample.add_argument("--seeds", type=_seed_list, default=[0], metavar="0,1")
    sample.add_argument("--steps", type=_whole_number(2, "2 or more"), default=26)
    sample.add_argument("--guidance-scale", type=_finite_float, default=5.0)
    sample.add_argument("--resolution", type=_positive_int, default=None, metavar="PX", help=SLIDER_RESOLUTION_HELP)
    sample.add_argument("--out", required=True, metavar="GRID.png", help="the grid; the single images go beside it")
    _add_slider_model_arguments(sample)
    sample.set_defaults(run=cmd_slider_sample)

    scorer = slider_commands.add_parser("scorer", help="distil das-ag's image score into a small network on latents")
    scorer.add_argument("--base", required=True, metavar="PATH")
    scorer.add_argument("--samples", type=_whole_number(10, "10 or more"), default=512, help="latents to learn from")
    scorer.add_argument("--epochs", type=_positive_int, default=200)
    scorer.add_argument("--resolution", type=_positive_int, default=None, metavar="PX", help=SLIDER_RESOLUTION_HELP)
    scorer.add_argument("--inference-steps", type=_whole_number(2, "2 or more"), default=26)
    scorer.add_argument("--prompts", metavar="FILE.txt")
    scorer.add_argument("--seed", type=_seed, default=0)
    scorer.add_argument("--out", required=True, metavar="SCORER.safetensors")
    _add_slider_model_arguments(scorer)
    scorer.set_defaults(run=cmd_slider_scorer)

    export = slider_commands.add_parser("export", help="write a slider LoRA in kohya's format (ComfyUI, A1111)")
    export.add_argument("lora", metavar="FILE.safetensors")
    export.add_argument("--kohya", required=True, metavar="OUT.safetensors")
    export.set_defaults(run=cmd_slider_export)

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

    prompts = prompts_from_args(args)
    if args.from_png:
        config = config_from_png(args.from_png)
        if args.preset:
            config = _preset_config(args, config.prompts)
        if prompts:
            config = config.replace(prompts=prompts)
    else:
        if (args.clip_weight is None or args.clip_weight > 0) and not any(
                parse_image_prompt(p)[1] > 0 for p in args.image_prompt):  # --clip-weight 0: aesthetic alone
            _need_attracting_prompt(prompts, "give at least one --prompt to steer towards (or --clip-weight 0 "
                                             "to steer by the aesthetic score alone)")
        config = _preset_config(args, prompts)
    return apply_settings(config, args)


def parse_image_prompt(text: str) -> tuple[str, float]:
    from .objectives.image_prompt import parse_image_prompt as parse

    return parse(text)


def _preset_config(args: argparse.Namespace, prompts: tuple) -> GenerationConfig:
    """The --preset's settings (or the defaults) with `prompts`; left unchecked until the flags
    are applied (a preset's prompt-less config may become valid with --clip-weight 0)."""
    settings = {**PRESETS.get(args.preset or "", {}), "prompts": prompts}
    draft = object.__new__(GenerationConfig)
    for f in dataclasses.fields(GenerationConfig):
        object.__setattr__(draft, f.name, settings.get(f.name, f.default))
    return draft


def _need_attracting_prompt(prompts: tuple, message: str) -> None:
    if not any(not p.is_negative for p in prompts):
        raise DasAgError(message)


def prompts_from_args(args: argparse.Namespace) -> tuple:
    """The prompts of --prompt and --negative, in that order."""
    from .prompts import parse_prompt

    return tuple(parse_prompt(p) for p in args.prompt) + tuple(parse_prompt(n, negative=True) for n in args.negative)


def apply_settings(config: GenerationConfig, args: argparse.Namespace) -> GenerationConfig:
    """`config` with every settings flag the user gave applied on top."""
    from .objectives import TERMS
    from .settings import values_from_arguments

    changes = values_from_arguments(args, GenerationConfig)
    if _is_ensemble(getattr(args, "clip_model", None)):
        changes["clip_models"] = tuple(args.clip_model)
    if getattr(args, "size", None) is not None:
        changes["width"], changes["height"] = args.size
    elif "resolution" in changes:  # --resolution alone asks for a square
        changes["width"] = changes["height"] = None
    canvas_settings = _canvas_settings_from_args(args, config, changes.get("canvas", config.canvas))
    if canvas_settings is not config.canvas_settings:
        changes["canvas_settings"] = canvas_settings
    terms = dict(config.terms)
    if getattr(args, "image_prompt", None):
        from .objectives.image_prompt import SEPARATOR

        entries = [parse_image_prompt(p) for p in args.image_prompt]
        terms["image_prompt"] = replace_settings(config.term_settings("image_prompt"),
                                                 {"images": SEPARATOR.join(f"{path}:{w:g}" for path, w in entries)})
    for name, term in TERMS.items():
        if term.Settings is not None:
            given = values_from_arguments(args, term.Settings, prefix=f"{name}_")
            if given:
                terms[name] = replace_settings(config.term_settings(name), given)
    if terms != dict(config.terms):
        changes["terms"] = terms
    if getattr(args, "init_strength", None) and not (terms.get("init") and terms["init"].image):
        raise DasAgError("--init-strength holds the run near a start picture; give one with --init-image")
    aesthetic = changes.get("aesthetic", config.aesthetic)
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
    return GenerationConfig(**{**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)}, **changes})


def _canvas_settings_from_args(args: argparse.Namespace, config: GenerationConfig, canvas: str):
    """The canvas settings after the flags: those of `config` (when it keeps its canvas) with the
    given flags applied; a flag of a canvas the run does not use is a mistake worth a line."""
    from .canvases import CANVASES
    from .settings import flag_of, described, values_from_arguments

    settings = config.canvas_settings if canvas == config.canvas else None
    if isinstance(settings, dict):
        from .config import canvas_settings_from_dict

        settings = canvas_settings_from_dict(canvas, settings)
    for name, cls in CANVASES.items():
        if cls.Settings is None:
            continue
        given = values_from_arguments(args, cls.Settings, prefix=f"{name}_")
        if not given:
            continue
        if name != canvas:
            f, s = next((f, s) for f, s in described(cls.Settings) if f.name in given)
            raise DasAgError(f"{flag_of(f, s, f'{name}_')} is a setting of the {name} canvas; add --canvas {name}")
        settings = replace_settings(settings if settings is not None else cls.Settings(), given)
    return settings


def progress_text(event) -> str:
    """The progress bar's numbers: the loss and each term's metrics, whatever terms the run has."""
    from .objectives import term_class

    parts = [f"loss={event.loss:.4f}"]
    for name, metrics in event.metrics.items():
        cls = term_class(name)
        if cls is not None and metrics:
            parts.append(cls.progress(metrics))
    return " ".join(p for p in parts if p)


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import determinism
    from .engine import synthesize
    from .models import resolve_device
    from .png import batch_from_recipe, check_writable, next_free_path, read_recipe
    from .rescue import save_or_rescue

    config = config_from_args(args)
    batch, index = (config,), 0
    if args.from_png:
        recipe_batch, recipe_index = batch_from_recipe(read_recipe(args.from_png))
        if recipe_batch[recipe_index] == config:
            # Made together with other images: the same bytes need the same batch.
            batch, index = recipe_batch, recipe_index
    out = Path(args.out) if args.out else next_free_path(config)
    if out.suffix.lower() != ".png":
        raise DasAgError(f"--out {out} must end in .png")
    if out.exists() and not args.overwrite:
        raise DasAgError(f"{out} already exists; pass --overwrite or choose another --out")
    check_writable(out)
    from .canvases import canvas_class

    for name, reason in canvas_class(config.canvas).ignores.items():
        if getattr(args, name, None) is not None:
            print(f"das-ag: warning: --{name.replace('_', '-')} has no effect on the {config.canvas} canvas: {reason}",
                  file=sys.stderr)
    device = resolve_device(config.device)
    _say(args, f"loading models on {device} ...")
    models = load_run_models(args, batch, config.device)
    if len(models.encoders) > 1:
        for encoder in models.encoders:
            mib = sum(p.numel() * p.element_size() for p in encoder.model.parameters()) / 2**20
            role = f"weight {encoder.weight:g}" if encoder.weight > 0 else "the aesthetic head only"
            _say(args, f"  {encoder.identity.name}: {role}, {encoder.width}-d, {mib:.0f} MiB of weights")
    if args.animation:
        from .animation import FORMATS

        animation = Path(args.animation)
        if animation.suffix.lower() not in FORMATS:
            raise DasAgError(f"--animation {animation} must end in {', '.join(FORMATS)}")
        if animation.exists() and not args.overwrite:
            raise DasAgError(f"{animation} already exists; pass --overwrite or choose another --animation")
        check_writable(animation)
    every = (args.animation_every or max(1, config.steps // 50)) if args.animation else 0
    run = synthesize(batch, models, preview_every=every)
    frames = [run.preview(index)] if args.animation else []
    for warning in run.warnings:
        print(f"das-ag: warning: {warning}", file=sys.stderr)
    together = f", re-made with the {len(batch) - 1} other image(s) of its batch" if len(batch) > 1 else ""
    size = f"{config.width}x{config.height}" if config.width is not None else f"{config.resolution}"
    _say(args, f"{config.method}: {config.steps} steps at {size} px, seed {config.seed}, "
               f"{determinism.mode(device, config.deterministic)}{together}")
    if config.compile:
        _say(args, "compiling the step: the first one waits for the compiler (about a minute)")
    interrupted = False
    with tqdm(total=config.steps, unit="step", disable=args.quiet, leave=False, file=sys.stderr) as bar:
        try:
            for event in run:
                bar.set_postfix_str(progress_text(event.images[index]), refresh=False)
                bar.update(1)
                if args.animation and event.images[index].preview is not None:
                    frames.append(event.images[index].preview)
        except KeyboardInterrupt:
            interrupted = True  # keep what was made: the image so far is saved below
            run.stop()
    result = run.result(index)
    # A disk that filled up during the run must not lose the image: it is kept elsewhere, and said.
    path, trouble = save_or_rescue(lambda p: result.save(p, overwrite=args.overwrite), out, "the image")
    troubles = [trouble] if trouble else []
    if args.animation:
        from .animation import save_animation

        if frames[-1].tobytes() != result.image.tobytes():
            frames.append(result.image)  # stopped between frames: end on the saved image
        saved, trouble = save_or_rescue(lambda p: save_animation(frames, p, overwrite=args.overwrite), args.animation,
                                        "the animation")
        troubles += [trouble] if trouble else []
        print(f"saved {saved} ({len(frames)} frames)")
    print(f"saved {path}  {config.method}  {result.steps_done} steps  {result.elapsed:.1f} s  "
          f"{result.scores.summary()}" + (f"  (aesthetic at start {result.initial_scores.aesthetic:.3f})"
                                          if result.initial_scores.aesthetic is not None else ""))
    if result.status in ("non_finite", "failed"):
        troubles.append(result.message)
    for trouble in troubles:
        print(f"das-ag: error: {trouble}", file=sys.stderr)
    if troubles:
        return EXIT_FAILED
    return EXIT_INTERRUPTED if interrupted else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from . import reference
    from .experiments import build_plan, slug

    if args.prompt_source == "reference":
        if args.prompt or args.negative:
            raise DasAgError("--prompts reference brings its own prompts; drop --prompt and --negative")
        prompt_sets = reference.prompt_sets()
    else:
        prompts = prompts_from_args(args)
        _need_attracting_prompt(prompts, "give at least one --prompt to steer towards, or --prompts reference")
        prompt_sets = [(slug(prompts[0].text), prompts)]
    settings = apply_settings(_preset_config(args, prompt_sets[0][1]), args)
    base = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name not in ("prompts", "guidance", "seed")}
    published = reference.PUBLISHED if args.prompt_source == "reference" else None
    plan = build_plan(prompt_sets, args.seeds, base, Path(args.out), evaluators=tuple(args.evaluate), published=published,
                      **({"methods": tuple(args.methods)} if args.methods else {}))
    return _run_plan(plan, args)


def cmd_batch(args: argparse.Namespace) -> int:
    from .experiments import load_plan

    return _run_plan(load_plan(args.plan, args.out), args)


def _run_plan(plan, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .evaluators import optional_evaluator
    from .experiments import run_plan
    from .models import resolve_device
    from .report import write_report

    device = plan.items[0].config.device
    # Evaluators first: a missing one should cost a message, not an hour of images.
    evaluators = [optional_evaluator(name, str(resolve_device(device))) for name in plan.evaluators]
    models = load_run_models(args, [item.config for item in plan.items], device)
    _say(args, f"{len(plan.items)} images into {plan.out_dir}")
    with tqdm(total=len(plan.items), unit="image", disable=args.quiet, file=sys.stderr) as bar:
        def on_item(item, status):
            bar.set_postfix_str(f"{item.filename} {status}")
            bar.update(1)

        try:
            made, skipped = run_plan(plan, models, on_item=on_item, images_per_step=args.images_per_step)
        except KeyboardInterrupt:
            bar.close()
            print(f"das-ag: interrupted; finished images are kept in {plan.image_dir}; "
                  "run the same command again to continue", file=sys.stderr)
            return EXIT_INTERRUPTED
    paths = write_report(plan.out_dir, evaluators)
    print(f"made {made}, skipped {skipped} already finished; tables in {plan.out_dir}, sheet {paths['contact_sheet']}")
    print(paths["summary_md"].read_text().split("\n\n")[0])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .evaluators import optional_evaluator
    from .models import resolve_device
    from .report import write_report

    folder = Path(args.folder)
    if not folder.is_dir():
        raise DasAgError(f"{folder} is not a folder")
    evaluators = [optional_evaluator(name, str(resolve_device(args.device))) for name in args.evaluate]
    paths = write_report(folder, evaluators)
    print(paths["summary_md"].read_text().split("\n\n")[0])
    return 0


def cmd_centroids_build(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from .models import load_models, resolve_device
    from .png import check_writable
    from .styles import build_centroids, embed_folder, picture_files
    from .weights import cache_dir

    out = Path(args.out)
    if out.suffix.lower() != ".npz":
        raise DasAgError(f"--out {out} must end in .npz")
    if out.exists() and not args.overwrite:
        raise DasAgError(f"{out} already exists; pass --overwrite or choose another --out")
    check_writable(out)
    picture_files(args.folder)  # a folder that is not there, before CLIP loads
    device = resolve_device(args.device)
    _say(args, f"loading CLIP on {device} ...")
    models = load_models(args.clip_model, None, args.device, need_head=False)
    start = time.perf_counter()
    with tqdm(unit="picture", disable=args.quiet, leave=False, file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        points, hashes, report = embed_folder(args.folder, models, cache_dir=cache_dir(), batch_size=args.batch_size,
                                              progress=progress)
    centroids = build_centroids(points, hashes, args.k, models.identities()["clip"], seed=args.seed)
    centroids.save(out, overwrite=args.overwrite)
    rate = f", {report.embedded / report.seconds:.2f} pictures/s" if report.embedded and report.seconds else ""
    print(f"saved {out}: k={centroids.k} styles of {centroids.images} pictures (sizes {centroids.sizes}), "
          f"inertia {centroids.inertia:.3f}; encoded {report.embedded}{rate}, {report.cached} from the cache, "
          f"{time.perf_counter() - start:.1f} s")
    if report.skipped:
        print(f"das-ag: warning: skipped {len(report.skipped)} file(s) that are not readable pictures, "
              f"e.g. {report.skipped[0]}", file=sys.stderr)
    return 0


def _slider_models(args: argparse.Namespace):
    """The slider's extra, the base checkpoint and das-ag's models, each with a one-line failure."""
    from .models import load_models, resolve_device
    from .slider import require_extra

    require_extra()
    from .slider.base import PRECISIONS, load_base, resolve_precision

    # Files named on the command line, before CLIP loads (or is downloaded) and the base loads.
    for what, path in (("base checkpoint", args.base), ("LoRA", getattr(args, "lora", None)),
                       ("latent scorer", getattr(args, "scorer", None))):
        if path and not Path(path).exists():
            raise DasAgError(f"{what} {path} does not exist")
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    _say(args, f"loading {args.base} and the scoring models on {device} in {precision} ...")
    models = load_models(args.clip_model, args.aesthetic_model, args.device)
    base = load_base(args.base, device, PRECISIONS[precision], config=args.config,
                     prediction_type=None if args.prediction_type == "auto" else args.prediction_type)
    if base.note:
        print(f"das-ag: note: {base.note}", file=sys.stderr)
    return base, models


def _note_long_prompts(base, prompts) -> None:
    """One line for the prompts the base model's text encoder cuts short (as it does when sampling)."""
    from .slider.denoise import long_prompts

    cut = long_prompts(base.pipe, prompts)
    if cut:
        limit = base.pipe.tokenizer.model_max_length
        which = "the prompt is" if len(prompts) == 1 else f"{len(cut)} of the {len(prompts)} prompts are"
        print(f"das-ag: note: {which} longer than the text encoder's {limit} tokens, so the end is cut, as when "
              f"sampling (first: {cut[0][:50]!r}...)", file=sys.stderr)


def cmd_slider_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise DasAgError(f"--out {out} must end in .safetensors")
    from .slider import require_extra

    require_extra()
    from .slider.lora import export_kohya
    from .slider.train import GENERAL_PROMPTS, SliderSettings, SliderStopped, load_prompts, train

    settings = SliderSettings(
        sign=args.sign, steps=args.steps, lr=args.lr, rank=args.rank, alpha=args.alpha, resolution=args.resolution,
        inference_steps=args.inference_steps, grad_steps=args.grad_steps, guidance_scale=args.guidance_scale,
        aesthetic_weight=args.aesthetic_weight,
        clip_weight=args.clip_weight, anchor_weight=args.anchor_weight, symmetric=args.symmetric,
        ambiguity=args.ambiguity, ambiguity_weight=args.ambiguity_weight, styles=args.styles,
        prompts=load_prompts(args.prompts) if args.prompts else GENERAL_PROMPTS,
        seed=args.seed, checkpoint_every=args.checkpoint_every, scorer=args.scorer or "",
    )
    problems = settings.problems()
    if problems:
        raise DasAgError(problems[0])
    from .png import check_writable

    for path in (out, *([Path(args.kohya)] if args.kohya else [])):
        check_writable(path)  # before the models load and the hours of training
    base, models = _slider_models(args)
    settings = dataclasses.replace(settings, precision=base.precision).for_base(base)
    _note_long_prompts(base, settings.prompts)
    with tqdm(total=settings.steps, unit="step", disable=args.quiet, leave=False, file=sys.stderr) as bar:
        def on_step(report) -> None:
            bar.n = report.step
            anchor = f" anchor={report.parts['anchor']:.2e}" if "anchor" in report.parts else ""
            bar.set_postfix_str(f"reward={report.reward:+.4f} aes={report.parts['aesthetic']:.3f}{anchor}", refresh=False)
            bar.refresh()

        try:
            def on_preview(preview) -> None:
                scores = ", ".join(f"{w}: {v:.3f}" for w, v in preview["aesthetic"].items())
                if not args.quiet:
                    bar.write(f"step {preview['step']}: {preview['file']} (aesthetic by LoRA weight {scores})",
                              file=sys.stderr)

            path = train(base, models, settings, out, on_step=on_step, gradient_checkpointing=args.gradient_checkpointing,
                         preview_every=args.preview_every, on_preview=on_preview)
        except SliderStopped as stopped:
            bar.close()
            print(f"das-ag: {stopped}", file=sys.stderr)
            return EXIT_INTERRUPTED
    print(f"saved {path} ({settings.sign}, {settings.steps} steps, rank {settings.rank})")
    if args.kohya:
        print(f"saved {export_kohya(path, args.kohya)} (kohya format)")
    return 0


def cmd_slider_sample(args: argparse.Namespace) -> int:
    from .png import check_writable, encode_png, write_atomic
    from .rescue import save_or_rescue

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise DasAgError(f"--out {out} must end in .png")
    check_writable(out)
    base, models = _slider_models(args)
    _note_long_prompts(base, [args.prompt])
    from .slider.sample import grid, grid_recipe, sample

    resolution = args.resolution or base.native_resolution
    cells, lora_recipe = sample(base, models, args.lora, args.weights, args.prompt, args.seeds, steps=args.steps,
                                guidance_scale=args.guidance_scale, resolution=resolution)
    recipe = grid_recipe(base, models, args.lora, lora_recipe, cells, args.prompt, weights=args.weights, seeds=args.seeds,
                         steps=args.steps, guidance_scale=args.guidance_scale, resolution=resolution,
                         precision=base.precision)

    def write(path: Path) -> Path:
        write_atomic(path, encode_png(grid(cells, args.weights, args.seeds), recipe), overwrite=True)
        for cell in cells:
            single = path.with_name(f"{path.stem}-seed{cell.seed}-w{cell.weight:+g}.png")
            write_atomic(single, encode_png(cell.image, {**recipe, "cell": {"seed": cell.seed, "weight": cell.weight,
                                                                            "aesthetic": cell.aesthetic}}), overwrite=True)
        return path

    saved, trouble = save_or_rescue(write, out, "the grid and its images")
    print(f"saved {saved} and {len(cells)} images beside it")
    for weight in args.weights:
        scores = [c.aesthetic for c in cells if c.weight == weight]
        print(f"  LoRA weight {weight:+g}: aesthetic {sum(scores) / len(scores):.3f} (mean of {len(scores)})")
    if trouble:
        print(f"das-ag: error: {trouble}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_slider_scorer(args: argparse.Namespace) -> int:
    import time

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise DasAgError(f"--out {out} must end in .safetensors")
    from .png import check_writable
    from .rescue import save_or_rescue

    check_writable(out)
    base, models = _slider_models(args)
    from .slider.latent_scorer import collect, distil, save_scorer
    from .slider.train import GENERAL_PROMPTS, SliderSettings, load_prompts

    settings = SliderSettings(resolution=args.resolution, inference_steps=args.inference_steps, seed=args.seed,
                              prompts=load_prompts(args.prompts) if args.prompts else GENERAL_PROMPTS,
                              precision=base.precision).for_base(base)
    problems = settings.problems()
    if problems:
        raise DasAgError(problems[0])
    start = time.perf_counter()
    latents, scores = collect(base, models, settings, args.samples)
    made = time.perf_counter() - start
    scorer, report = distil(latents, scores, epochs=args.epochs, seed=args.seed)
    recipe = {"base": base.identity(), "models": models.identities(), "samples": args.samples,
              "resolution": settings.resolution, "precision": base.precision,
              "validation_correlation": report.validation_correlation, "validation_mse": report.validation_mse}
    saved, trouble = save_or_rescue(lambda path: save_scorer(path, scorer, recipe), out, "the scorer")
    print(f"saved {saved}: {report.samples} latents ({made:.1f} s to make and score), held-out correlation "
          f"{report.validation_correlation:.3f}, mse {report.validation_mse:.4f} (scores' spread {report.target_std:.4f})")
    if trouble:
        print(f"das-ag: error: {trouble}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_slider_export(args: argparse.Namespace) -> int:
    from .slider import require_extra

    require_extra()
    from .slider.lora import export_kohya

    print(f"saved {export_kohya(args.lora, args.kohya)} (kohya format)")
    return 0


def cmd_recipe(args: argparse.Namespace) -> int:
    from .png import read_recipe

    if Path(args.png).suffix.lower() == ".safetensors":  # a slider LoRA keeps its recipe in its metadata
        from .slider.lora import read_lora

        recipe = read_lora(args.png)[1]
        if not recipe:
            raise DasAgError(f"{args.png} holds no das-ag recipe (a LoRA from elsewhere?)")
    else:
        recipe = read_recipe(args.png)
    print(json.dumps(recipe, indent=2, sort_keys=True, ensure_ascii=False))
    return 0


# What the project's .streamlit/config.toml sets, for `das-ag app` started from any folder: this
# machine only, no usage statistics, small uploads, no source watcher. A flag the user passes wins.
STUDIO_SERVER_DEFAULTS = {
    "--server.address": "localhost",
    "--browser.gatherUsageStats": "false",
    "--server.maxUploadSize": str(MAX_UPLOAD_MB),
    "--server.fileWatcherType": "none",
    "--runner.postScriptGC": "false",
    "--client.toolbarMode": "viewer",
}


def cmd_app(args: argparse.Namespace) -> int:
    import os

    app_path = Path(__file__).with_name("app.py")
    given = {a.split("=", 1)[0] for a in args.streamlit_args}
    defaults = [x for flag, value in STUDIO_SERVER_DEFAULTS.items() if flag not in given for x in (flag, value)]
    argv = [sys.executable, "-m", "streamlit", "run", str(app_path), *defaults, *args.streamlit_args]
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
    except OSError as exc:  # the machine's answer (a file gone, no permission, a full disk), not a bug of ours
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"das-ag: error: {exc.strerror or first_line(exc)}{where}", file=sys.stderr)
        return EXIT_FAILED
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not isinstance(exc, MemoryError) and type(exc).__name__ != "OutOfMemoryError":
            raise
        # A run's steps keep their image (the engine catches their errors); this is loading and the rest.
        print(f"das-ag: error: ran out of memory ({first_line(exc, 120)}); free memory on the device, or ask for "
              "less (a smaller resolution, fewer copies, --images-per-step 1)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
