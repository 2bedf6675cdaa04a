"""Build the agent as one reproducible zipapp: ``python -m components.agent_zipapp OUT.pyz``.

Same sources -> same bytes: entries sorted, fixed timestamps and permissions, no
__pycache__, deflate at a fixed level. The Pulumi side can hash it to decide whether the
host needs a new copy.
"""
from __future__ import annotations

import io
import os
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHEBANG = b"#!/usr/bin/python3\n"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
MAIN = b"import sys\nfrom agent.__main__ import main\nsys.exit(main())\n"


def sources(root: str = ROOT) -> list[tuple[str, bytes]]:
    out = []
    for top, suffixes in (("agent", (".py",)), ("templates", (".j2",))):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in filenames:
                if name.endswith(suffixes):
                    full = os.path.join(dirpath, name)
                    with open(full, "rb") as f:
                        out.append((os.path.relpath(full, root).replace(os.sep, "/"), f.read()))
    out.append(("__main__.py", MAIN))
    return sorted(out)


def build_bytes(root: str = ROOT) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in sources(root):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, whatever the build machine is
            zf.writestr(info, data, compresslevel=9)
    return SHEBANG + buf.getvalue()


def build(out: str, root: str = ROOT) -> str:
    data = build_bytes(root)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m components.agent_zipapp OUT.pyz")
    print(build(sys.argv[1]))
