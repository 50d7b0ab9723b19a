"""das-ag: Direct Ascent Synthesis on CLIP with a signed aesthetic term.

The public API: build a GenerationConfig, load the models once, `synthesize(config, models)`
(iterate it for steps, or `.run()` it) or `synthesize_all(configs, models)` for many images.
`generate` and `generate_all` are deprecated aliases, kept for one release. Names are imported on
first use so that `das-ag --help` does not wait for torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "GenerationConfig": "config", "PRESETS": "config",
    "StepEvent": "engine", "Synthesis": "engine", "SynthesisResult": "engine", "generate": "engine",
    "generate_all": "engine", "synthesize": "engine", "synthesize_all": "engine",
    "ConfigError": "errors", "DasAgError": "errors", "DeviceError": "errors", "WeightsError": "errors",
    "ModelBundle": "models", "load_models": "models",
    "Prompt": "prompts", "parse_prompt": "prompts",
    "Schedule": "schedules",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'das_ag' has no attribute {name!r}")
