"""Colour maths for the tests that judge nick colours (chat-client's and the web page's).

CIELAB (D65) distance approximates what eyes tell apart; the WCAG contrast
ratio says whether text reads on its background.
"""

from __future__ import annotations

import re

RGB = tuple[float, float, float]


def rgb(css: str) -> RGB:
    """'#010203' or 'rgb(1, 2, 3)' -> (1, 2, 3), channels 0-255."""
    if css.startswith("#"):
        return (int(css[1:3], 16), int(css[3:5], 16), int(css[5:7], 16))
    r, g, b = (float(v) for v in re.findall(r"[\d.]+", css)[:3])
    return (r, g, b)


def _linear(c: float) -> float:
    """One sRGB channel (0-255) -> linear light (0-1)."""
    c /= 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(colour: RGB) -> float:
    r, g, b = (_linear(c) for c in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def lab(colour: RGB) -> RGB:
    """sRGB (0-255) -> CIELAB (D65)."""
    r, g, b = (_linear(c) for c in colour)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def worst_pair(colours: list[RGB]) -> float:
    """The smallest CIELAB distance between any two of `colours`."""
    labs = [lab(c) for c in colours]
    return min(float(sum((p - q) ** 2 for p, q in zip(a, b, strict=True)) ** 0.5)
               for i, a in enumerate(labs) for b in labs[i + 1:])


def contrast(a: RGB, b: RGB) -> float:
    """WCAG contrast ratio; 4.5 is AA for normal-size text."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)
