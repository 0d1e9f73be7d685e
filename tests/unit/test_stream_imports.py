"""The stream package stands on its own: no service wiring, no upstream side."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("app.services", "app.supervisor", "app.upstream", "app.api", "app.service")


def test_the_stream_package_imports_none_of_the_service_wiring() -> None:
    code = (
        "import sys\n"
        "import app.stream.hub, app.stream.mirror, app.stream.subscriber\n"
        "import app.stream.messages, app.stream.fastwrite, app.stream.source\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"app.stream pulled in {out.stdout.strip()}"
