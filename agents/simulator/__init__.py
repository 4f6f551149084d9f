"""A local, OpenAI-compatible chat-completions server for tests, demos and benchmarks.

It is honest about what it is (``system_fingerprint: "aicp-simulator"``, an ``X-AICP-Simulator: 1``
header, and a ``/v1/models`` listing that says so). Production code never imports it.

Answers, in order of precedence:

1. a scripted response (``script(...)``) — faults, raw answers, dropped connections, delays;
2. a random fault, with probability ``fault_rate``;
3. a forced answer for an exact text (``set_answer``);
4. for labeling requests (a ``json_schema`` response format with an ``enum``): the dataset label for a
   known text (optionally flipped with probability ``noise``), else the label nearest in embedding space
   (``zero_shot``, when ``duke.encoder`` is importable), else a label picked by a stable hash of the text;
5. for free-form requests: a short deterministic text that says it comes from the simulator.

Pure stdlib plus the optional lazy encoder import. Run it with
``python -m agents.simulator --port 8100`` or ``python manage.py llm_simulator --port 8100``.

Modules: ``server`` (``LLMSimulator``: lifecycle, test controls, routing of requests to answers),
``scripted`` (``Fault``, ``Answer``, ``Drop``, ``Delay``), ``teachers`` (dataset, zero-shot and hashed
labels, free-form text), ``protocol`` (the OpenAI request and response JSON), ``http11`` (reading and
writing HTTP/1.1), ``cli`` (the command line).
"""

from agents.simulator.cli import add_arguments, main, serve_until_interrupted, simulator_from_options
from agents.simulator.protocol import ADVERTISED_MODELS, SIMULATOR_NAME
from agents.simulator.scripted import Answer, Delay, Drop, Fault, Scripted
from agents.simulator.server import LLMSimulator
from agents.simulator.teachers import load_dataset, normalise_text

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
