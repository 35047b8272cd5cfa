"""Lab rigs only: the code Python compiles from sources inside zip archives, kept by content.

Every Ansible task runs its module from a fresh zip (AnsiballZ), and Python compiles the zip's
sources (Ansible's module_utils) on every task, since it cannot write .pyc files into a zip:
about 0.06 s of CPU per task. A real rig spends that on its own cores; the lab's rigs share the
test machine's, so the lab keeps each compiled source in /run/lab/pycache under the sha256 of
the source and the interpreter's cache tag. Same source, same code object; only a traceback
would name the zip of the task that compiled it first. Loaded at interpreter start by
lab-pycache.pth; rigpivot knows nothing of it.
"""

import marshal
import os
import sys
import zipimport

CACHE = "/run/lab/pycache"
_compile = zipimport._compile_source


def _cached_compile(pathname, source):
    import hashlib

    key = hashlib.sha256(source).hexdigest()
    path = os.path.join(CACHE, f"{key}.{sys.implementation.cache_tag}")
    try:
        with open(path, "rb") as f:
            return marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile(pathname, source)
    try:
        os.makedirs(CACHE, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "wb") as f:
            marshal.dump(code, f)
        os.replace(tmp, path)
    except OSError:
        pass
    return code


zipimport._compile_source = _cached_compile
