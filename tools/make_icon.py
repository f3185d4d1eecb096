"""Draw the plugin icon (64×64 PNG): a city skyline rising out of a point cloud, hillshade colours.

Run with Debian's Python (PyQt5 from python3-qgis): ``/usr/bin/python3 tools/make_icon.py``.
"""
from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PyQt5.QtCore import QPointF, QRectF, Qt
from PyQt5.QtGui import QColor, QGuiApplication, QImage, QLinearGradient, QPainter, QPen

SIZE = 64
#: (x, width, height) of the buildings, in pixels of the 64 px icon.
BUILDINGS = ((6, 10, 22), (17, 9, 34), (27, 12, 44), (40, 8, 28), (49, 10, 38))


def draw(size: int = SIZE) -> QImage:
    image = QImage(size, size, QImage.Format_ARGB32)
    image.fill(Qt.transparent)
    p = QPainter(image)
    p.setRenderHint(QPainter.Antialiasing)
    s = size / SIZE
    # rounded background: sky gradient
    sky = QLinearGradient(0, 0, 0, size)
    sky.setColorAt(0.0, QColor("#1f4e79"))
    sky.setColorAt(1.0, QColor("#4f8fc0"))
    p.setBrush(sky)
    p.setPen(Qt.NoPen)
    p.drawRoundedRect(QRectF(0, 0, size, size), 10 * s, 10 * s)
    ground = 56 * s
    # buildings coloured by height like the DSM ramp, lit side and shaded side (hillshade look)
    ramp = [QColor("#4fa36b"), QColor("#c9d67a"), QColor("#e3b15a"), QColor("#b0694a"), QColor("#f4f1ee")]
    for x, w, h in BUILDINGS:
        colour = ramp[min(len(ramp) - 1, int(h / 45 * (len(ramp) - 1) + 0.5))]
        p.setBrush(colour)
        p.drawRect(QRectF(x * s, ground - h * s, w * s, h * s))
        p.setBrush(colour.darker(140))
        p.drawRect(QRectF((x + w * 0.6) * s, ground - h * s, w * 0.4 * s, h * s))
    # the input point cloud: scattered dots over the roofs (deterministic)
    rng = random.Random(6)
    p.setPen(QPen(QColor(255, 255, 255, 220), 1.6 * s, Qt.SolidLine, Qt.RoundCap))
    for x, w, h in BUILDINGS:
        for _ in range(3):
            px = (x + rng.uniform(1, w - 1)) * s
            py = ground - (h + rng.uniform(2, 5)) * s
            p.drawPoint(QPointF(px, py))
    p.setPen(Qt.NoPen)
    p.setBrush(QColor("#2d3b2d"))
    p.drawRect(QRectF(3 * s, ground, size - 6 * s, 4 * s))
    p.end()
    return image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "icon.png"))
    args = parser.parse_args()
    app = QGuiApplication([])  # noqa: F841 - fonts/painting need an application object
    if not draw().save(args.out, "PNG"):
        raise SystemExit(f"could not write {args.out}")
    print(f"icon written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
