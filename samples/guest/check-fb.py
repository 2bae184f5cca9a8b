#!/usr/bin/env python3
"""check-fb.py: compare a QMP screendump (binary PPM, P6, 8-bit RGB) with the image the vgt
guest's workload left on that scanout, recomputed here from the patterns of vgt-drm-test.c.

  check-fb.py fb   SHOT.ppm [--size WxH] [--frame F]           fb workload (default frame 49)
  check-fb.py drm  SHOT.ppm --size WxH --scanout S --variant V  modes workload

Prints one line: a match, or the number of differing pixels and the first of them.
Exit status 0 on a match, 1 on a mismatch or an unreadable file.
"""

import argparse
import sys

FB_FRAMES = 50  # vgt-drm-test.c FB_FRAMES


def fb_row(f: int, y: int, width: int) -> bytes:
    """Row y of fb frame f: R = (x + 4f) & 255, G = (y + 2f) & 255, B = 255 on odd checks."""
    g = (y + 2 * f) & 255
    row = bytearray(3 * width)
    for x in range(width):
        row[3 * x] = (x + 4 * f) & 255
        row[3 * x + 1] = g
        row[3 * x + 2] = 255 if (x // 32 + y // 32 + f) & 1 else 0
    return bytes(row)


def drm_row(scanout: int, variant: int, y: int, width: int, height: int) -> bytes:
    """Row y of a DRM test buffer: a gradient plus scanout+1 white 32x32 squares at y 16..47."""
    row = bytearray(3 * width)
    g = y * 255 // (height - 1)
    b = 255 if variant else 0
    for x in range(width):
        if 16 <= y < 48 and x >= 16 and (x - 16) % 48 < 32 and (x - 16) // 48 <= scanout:
            row[3 * x : 3 * x + 3] = b"\xff\xff\xff"
        else:
            row[3 * x : 3 * x + 3] = bytes((x * 255 // (width - 1), g, b))
    return bytes(row)


def read_ppm(path: str) -> tuple[int, int, bytes]:
    with open(path, "rb") as f:
        data = f.read()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:  # magic, width, height, maxval; '#' starts a comment
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            raise ValueError(f"{path}: truncated PPM header")
        fields.append(data[start:pos])
    pos += 1  # the single whitespace byte after maxval
    if fields[0] != b"P6" or fields[3] != b"255":
        raise ValueError(f"{path}: not an 8-bit binary PPM (P6, maxval 255)")
    width, height = int(fields[1]), int(fields[2])
    pixels = data[pos:]
    if len(pixels) != 3 * width * height:
        raise ValueError(f"{path}: {len(pixels)} bytes of pixels, {width}x{height} needs {3 * width * height}")
    return width, height, pixels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pattern", choices=["fb", "drm"])
    ap.add_argument("shot")
    ap.add_argument("--size", help="expected WxH (required for drm)")
    ap.add_argument("--frame", type=int, default=FB_FRAMES - 1)
    ap.add_argument("--scanout", type=int, default=0)
    ap.add_argument("--variant", type=int, default=0)
    args = ap.parse_args()

    try:
        width, height, pixels = read_ppm(args.shot)
    except (OSError, ValueError) as e:
        print(f"check-fb.py: error: {e}", file=sys.stderr)
        return 1
    if args.size:
        want = tuple(int(v) for v in args.size.lower().split("x"))
        if want != (width, height):
            print(f"check-fb.py: {args.shot} is {width}x{height}, expected {args.size}")
            return 1
    elif args.pattern == "drm":
        ap.error("drm needs --size")

    what = (f"fb frame {args.frame}" if args.pattern == "fb"
            else f"drm scanout {args.scanout} variant {args.variant}")
    bad, first = 0, None
    stride = 3 * width
    for y in range(height):
        if args.pattern == "fb":
            want_row = fb_row(args.frame, y, width)
        else:
            want_row = drm_row(args.scanout, args.variant, y, width, height)
        got_row = pixels[y * stride : (y + 1) * stride]
        if got_row == want_row:
            continue
        for x in range(width):
            got, exp = got_row[3 * x : 3 * x + 3], want_row[3 * x : 3 * x + 3]
            if got != exp:
                bad += 1
                if first is None:
                    first = (x, y, exp.hex(), got.hex())
    if bad:
        x, y, exp, got = first
        print(f"check-fb.py: {args.shot} ({width}x{height}) differs from {what} in {bad} pixels; "
              f"first at ({x},{y}): expected rgb {exp}, got {got}")
        return 1
    print(f"check-fb.py: {args.shot} ({width}x{height}) matches {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
