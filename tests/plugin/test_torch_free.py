"""Loading the plugin (what Scipion's GUI and every protocol process do) imports no
torch: the forms' names and defaults come from ``engine.defaults`` and the model's
metadata from its JSON side-car (``engine.model_card``)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys, time
start = time.perf_counter()
{imports}
print(json.dumps({{"torch": "torch" in sys.modules,
                  "seconds": time.perf_counter() - start}}))
"""
PLUGIN_IMPORTS = """
import sasi_scipion
from sasi_scipion import Plugin
import sasi_scipion.objects, sasi_scipion.protocols, sasi_scipion.viewers
from pyworkflow.plugin import Domain
assert Domain.getPlugin("sasi_scipion") is not None
assert "ProtSaSiPick" in Domain.getProtocols()
"""


def _probe(imports: str) -> dict:
    """Run ``imports`` in a fresh interpreter (the test session's Scipion environment);
    whether torch got loaded, and how long the imports took (s)."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)],
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_loading_the_plugin_imports_no_torch() -> None:
    result = _probe(PLUGIN_IMPORTS)
    print(f"plugin loaded in {result['seconds']:.2f} s")  # the bar: under 2 s
    assert result["torch"] is False


def test_the_probe_sees_torch_when_it_is_loaded() -> None:
    """Control: the engine's model file module needs torch, and the probe reports it."""
    assert _probe("import sasi_scipion.engine.model_file")["torch"] is True
