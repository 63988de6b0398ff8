"""torchrun, with its failure report kept: `python -m bench.distributed.agent <report.json> <torchrun arguments>`.

This is torchrun's own `main`, in a process of its own (its agent installs signal handlers that must not replace
bench's). When ranks fail, torchrun's `ChildFailedError` holds one `ProcessFailure` per failed rank: the exit
code, the message from the rank's error file (torch's `record`) or, for a rank killed by a signal, which signal,
and when. They are written to `report.json` for `bench.distributed.launch`, and the error goes on up, so
torchrun's "Root Cause" summary is printed as ever.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def failures_report(failures: dict[int, Any]) -> list[dict[str, Any]]:
    """torchrun's failures, one plain record per rank; `error_file_mtime` (0 where the rank left no file, as a
    signal's victim does) orders failures within the same second."""
    report = []
    for rank, failure in sorted(failures.items()):
        message = failure.message
        text = message.get("message", json.dumps(message)) if isinstance(message, dict) else str(message)
        written = os.path.getmtime(failure.error_file) if os.path.isfile(failure.error_file) else 0.0
        report.append({"rank": rank, "exitcode": failure.exitcode, "message": text,
                       "timestamp": failure.timestamp, "error_file_mtime": written})
    return report


def main(argv: list[str]) -> None:
    """torchrun with `argv[1:]`; its failures to `argv[0]`."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    report = Path(argv[0])
    try:
        torchrun(argv[1:])
    except ChildFailedError as failed:
        report.write_text(json.dumps(failures_report(failed.failures)))
        raise


if __name__ == "__main__":
    main(sys.argv[1:])
