"""stimulus-verify runs on the standard library, `cryptography` and `py_ecc` (with what they need), nothing else.

An auditor installs the verifier beside nothing of the service: no web framework, no database
driver, no settings. This runs it in a fresh interpreter, in both modes on the spec's worked
example, and lists every top-level module it loaded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_DISTRIBUTIONS = ("cryptography", "py-ecc")
# What the interpreter, the packaging of this checkout and the extension modules add on their own.
NOISE = re.compile(r"^(__main__|__mp_main__|__editable__.*|_distutils_hack|_sysconfigdata.*|cython_runtime|_cython_.*|_openssl)$")

PROGRAM = """
import json, sys
from lottery import verify
said = []
examples = "docs/examples/"
assert verify.run([examples + "bundle.json", "--registrants", examples + "registrants.csv", "--workers", "1"],
                  say=said.append) == 0, said
assert verify.run([examples + "bundle.json", "--proof", examples + "proof-ticket-4.json"], say=said.append) == 0, said
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names))))
"""


def requirement_closure(names: tuple[str, ...]) -> set[str]:
    """The distributions `names` need, transitively (extras and environment markers that are off left out)."""
    seen: set[str] = set()
    pending = [n.lower().replace("_", "-") for n in names]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in distribution(name).requires or []:
            if "extra ==" in requirement:
                continue
            pending.append(re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-"))
    return seen


def test_the_verifier_loads_only_the_standard_library_cryptography_and_py_ecc() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    allowed = requirement_closure(ALLOWED_DISTRIBUTIONS)
    owners = packages_distributions()
    foreign = {module for module in loaded - {"lottery"} if not NOISE.match(module)
               and not {d.lower().replace("_", "-") for d in owners.get(module, [])} & allowed}
    assert "py_ecc" in loaded and "cryptography" in loaded
    assert not foreign, f"stimulus-verify imports {sorted(foreign)}, outside the standard library, cryptography and py_ecc"
