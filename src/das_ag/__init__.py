"""das-ag: Direct Ascent Synthesis on CLIP with a signed aesthetic term."""

__version__ = "0.1.0"
