"""The OpenAI-compatible LLM simulator, moved into a package; the split into modules follows."""

from agents.simulator.server import (
    ADVERTISED_MODELS,
    SIMULATOR_NAME,
    Answer,
    Delay,
    Drop,
    Fault,
    LLMSimulator,
    Scripted,
    add_arguments,
    load_dataset,
    main,
    normalise_text,
    serve_until_interrupted,
    simulator_from_options,
)

__all__ = [
    "ADVERTISED_MODELS",
    "SIMULATOR_NAME",
    "Answer",
    "Delay",
    "Drop",
    "Fault",
    "LLMSimulator",
    "Scripted",
    "add_arguments",
    "load_dataset",
    "main",
    "normalise_text",
    "serve_until_interrupted",
    "simulator_from_options",
]
