#!/usr/bin/env python3
"""qmp.py: the few QMP commands the vgt guest tests need (python3 standard library only).

  qmp.py SOCK screendump OUT [--head N] [--device ID] [--format ppm|png]
  qmp.py SOCK quit
  qmp.py SOCK execute COMMAND [JSON-ARGUMENTS]

The exchange, one JSON object per line over the unix socket QEMU got with
`-qmp unix:SOCK,server=on,wait=off` (run-guest.sh --qmp SOCK):
  1. QEMU greets:   {"QMP": {"version": ..., "capabilities": [...]}}
  2. we send:       {"execute": "qmp_capabilities"}           -> {"return": {}}
  3. we send:       {"execute": "screendump", "arguments": {"filename": "/abs/out.ppm",
                     "device": "gpu0", "head": 1, "format": "ppm"}}  -> {"return": {}}
     or:            {"execute": "quit"}                         -> {"return": {}}, then EOF
  Failures come back as {"error": {"class": ..., "desc": ...}}. Asynchronous events
  ({"event": ...}) may arrive between them and are skipped.
The screendump is written by QEMU itself (so the path must be one QEMU can write; qmp.py makes
it absolute). PPM is binary P6, 8-bit RGB of the console surface the display backend last
showed for that head. Without --device QEMU dumps the first console; --head needs --device
(QEMU: "'head' must be specified together with 'device'"); an unknown head gives "Device gpu0
(head 2) is not bound to a QemuConsole". The device id is that of the PCI device
(run-guest.sh names it gpu0).
The socket appears a moment after QEMU starts: qmp.py retries connecting for --wait seconds.
Exit status 0 on success, 1 with one line on stderr otherwise.
"""

import argparse
import json
import os
import socket
import sys
import time


class QmpError(Exception):
    pass


class Qmp:
    def __init__(self, path: str, wait: float):
        deadline = time.monotonic() + wait
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError as e:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise QmpError(f"cannot connect to {path}: {e}") from e
                time.sleep(0.1)
        self.file = self.sock.makefile("rwb")
        greeting = self._read()
        if "QMP" not in greeting:
            raise QmpError(f"unexpected greeting {greeting}")
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        line = self.file.readline()
        if not line:
            raise QmpError("QEMU closed the QMP connection")
        return json.loads(line)

    def execute(self, command: str, arguments: dict | None = None) -> object:
        request: dict = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.file.write(json.dumps(request).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                err = reply["error"]
                raise QmpError(f"{command}: {err.get('class')}: {err.get('desc')}")
            if "return" in reply:
                return reply["return"]
            raise QmpError(f"{command}: unexpected reply {reply}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("socket")
    ap.add_argument("--wait", type=float, default=10.0, help="seconds to retry connecting")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sd = sub.add_parser("screendump")
    sd.add_argument("out")
    sd.add_argument("--device", help="QOM id of the display device (run-guest.sh: gpu0)")
    sd.add_argument("--head", type=int, help="scanout index (needs --device)")
    sd.add_argument("--format", choices=["ppm", "png"], default="ppm")
    sub.add_parser("quit")
    ex = sub.add_parser("execute")
    ex.add_argument("command")
    ex.add_argument("arguments", nargs="?", help="JSON object")
    args = ap.parse_args()

    try:
        qmp = Qmp(args.socket, args.wait)
        if args.cmd == "screendump":
            arguments: dict = {"filename": os.path.abspath(args.out), "format": args.format}
            if args.device is not None:
                arguments["device"] = args.device
            if args.head is not None:
                arguments["head"] = args.head
            qmp.execute("screendump", arguments)
        elif args.cmd == "quit":
            qmp.execute("quit")
        else:
            result = qmp.execute(args.command, json.loads(args.arguments) if args.arguments else None)
            print(json.dumps(result))
    except (QmpError, OSError, ValueError) as e:
        print(f"qmp.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
