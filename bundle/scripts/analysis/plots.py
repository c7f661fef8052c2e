"""Heat maps and scatter plots as RGB arrays, drawn with Pillow (matplotlib is not a dependency of the bundle)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["TASK_COLOURS", "colour_of", "heatmap", "scatter", "side_by_side", "stacked"]

#: Colour of each task in every figure.
TASK_COLOURS: dict[str, tuple[int, int, int]] = {"mri": (31, 119, 180), "ct": (255, 127, 14), "pet": (44, 160, 44)}
_OTHER_COLOURS = [(214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)]
# viridis, sampled at 5 points: readable in grey and by colour-blind readers
_SEQUENTIAL = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=float)
# blue - white - red, for signed values centred at 0
_DIVERGING = np.array([(59, 76, 192), (141, 176, 254), (242, 242, 242), (244, 154, 123), (180, 4, 38)], dtype=float)
_MARGIN = 8
_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)


def _font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def colour_of(label: str, labels: Sequence[str]) -> tuple[int, int, int]:
    """The colour of a task (fixed for mri, ct, pet; by position for other labels)."""
    if label in TASK_COLOURS:
        return TASK_COLOURS[label]
    others = [v for v in dict.fromkeys(labels) if v not in TASK_COLOURS]
    return _OTHER_COLOURS[others.index(label) % len(_OTHER_COLOURS)]


def _colour(t: float, palette: np.ndarray) -> tuple[int, int, int]:
    t = min(max(float(t), 0.0), 1.0) * (len(palette) - 1)
    k = min(int(t), len(palette) - 2)
    rgb = palette[k] + (palette[k + 1] - palette[k]) * (t - k)
    return tuple(int(round(v)) for v in rgb)


def heatmap(
    values: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    fmt: str = "{:.2f}",
    vmin: float | None = None,
    vmax: float | None = None,
    diverging: bool = False,
    cell: tuple[int, int] = (64, 30),
    annotate: bool = True,
    row_title: str = "",
    col_title: str = "",
) -> np.ndarray:
    """A captioned heat map of a matrix, each cell optionally showing its value.

    Args:
        values: ``(R, C)`` finite values.
        row_labels, col_labels: tick labels (column labels are drawn only when the cells are wide enough).
        title: caption above the map.
        fmt: format of a cell's text.
        vmin, vmax: colour range (default: the values' range; for ``diverging``, symmetric about 0).
        diverging: blue-white-red centred at 0 instead of viridis.
        cell: ``(width, height)`` of a cell in pixels.
        annotate: write each cell's value.
        row_title, col_title: what the rows and columns are (drawn left of the row labels / above the columns).

    Returns:
        ``(H, W, 3)`` uint8 RGB image.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values {values.shape} do not match {len(row_labels)} rows x {len(col_labels)} columns")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"heat map {title!r}: values must be finite")
    if diverging:
        bound = max(abs(vmin or 0.0), abs(vmax or 0.0), float(np.abs(values).max())) or 1.0
        vmin, vmax = -bound, bound
    vmin = float(values.min()) if vmin is None else vmin
    vmax = float(values.max()) if vmax is None else vmax
    span = vmax - vmin if vmax > vmin else 1.0
    palette = _DIVERGING if diverging else _SEQUENTIAL
    font, small, value_font = _font(13), _font(11), _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max([_text_size(probe, str(v), small)[0] for v in row_labels] + [0]) + 6
    row_title_w = _text_size(probe, row_title, small)[1] + 8 if row_title else 0
    show_cols = cell[0] >= max([_text_size(probe, str(v), small)[0] for v in col_labels] + [0]) + 2
    title_h, col_title_h, col_h = 20, 16 if col_title else 0, 16 if show_cols else 0
    width = max(
        _MARGIN * 2 + row_title_w + label_w + cell[0] * values.shape[1], _text_size(probe, title, font)[0] + 2 * _MARGIN
    )
    height = _MARGIN * 2 + title_h + col_title_h + col_h + cell[1] * values.shape[0] + 16  # + colour bar caption
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((_MARGIN, _MARGIN), title, fill=_INK, font=font)
    x0 = _MARGIN + row_title_w + label_w
    y0 = _MARGIN + title_h + col_title_h + col_h
    if col_title:
        draw.text((x0, _MARGIN + title_h), col_title, fill=_INK, font=small)
    if row_title:  # rotated, left of the row labels
        w, h = _text_size(probe, row_title, small)
        label = Image.new("RGB", (w + 4, h + 6), _BACKGROUND)
        ImageDraw.Draw(label).text((2, 0), row_title, fill=_INK, font=small)
        rotated = label.rotate(90, expand=True)
        image.paste(rotated, (_MARGIN, y0 + max(0, (cell[1] * values.shape[0] - rotated.height) // 2)))
    for c, text in enumerate(col_labels):
        if show_cols:
            w, _ = _text_size(draw, str(text), small)
            draw.text((x0 + c * cell[0] + (cell[0] - w) // 2, y0 - col_h), str(text), fill=_INK, font=small)
    for r, text in enumerate(row_labels):
        draw.text((x0 - label_w, y0 + r * cell[1] + cell[1] // 2 - 7), str(text), fill=_INK, font=small)
        for c in range(values.shape[1]):
            rgb = _colour((values[r, c] - vmin) / span, palette)
            box = (x0 + c * cell[0], y0 + r * cell[1], x0 + (c + 1) * cell[0] - 1, y0 + (r + 1) * cell[1] - 1)
            draw.rectangle(box, fill=rgb)
            if annotate:
                text_rgb = _INK if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 128 else (255, 255, 255)
                text = fmt.format(values[r, c])
                w, _ = _text_size(draw, text, value_font)
                where = (box[0] + (cell[0] - w) // 2, box[1] + cell[1] // 2 - 8)
                draw.text(where, text, fill=text_rgb, font=value_font)
    scale = f"colour: {fmt.format(vmin)} .. {fmt.format(vmax)}"
    draw.text((x0, y0 + cell[1] * values.shape[0] + 3), scale, fill=(90, 90, 90), font=small)
    return np.asarray(image)


def scatter(
    points: np.ndarray, labels: Sequence[str], title: str, size: int = 360, radius: int = 4, xlabel: str = ""
) -> np.ndarray:
    """A scatter plot of 2-D points coloured by label, with a legend.

    Args:
        points: ``(N, 2)`` finite coordinates.
        labels: label of each point.
        title: caption above the plot.
        size: side of the square plotting area, pixels.
        radius: dot radius.
        xlabel: caption below the plot (e.g. the embedding's name).

    Returns:
        ``(H, W, 3)`` uint8 RGB image.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] != len(labels):
        raise ValueError(f"points {points.shape} do not match {len(labels)} labels")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"scatter {title!r}: points must be finite")
    font, small = _font(13), _font(11)
    legend = list(dict.fromkeys(labels))
    legend_w = 80
    width, height = size + 2 * _MARGIN + legend_w, size + 2 * _MARGIN + 20 + 18
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((_MARGIN, _MARGIN), title, fill=_INK, font=font)
    x0, y0 = _MARGIN, _MARGIN + 20
    draw.rectangle((x0, y0, x0 + size, y0 + size), outline=(160, 160, 160))
    low, high = points.min(0), points.max(0)
    span = np.where(high > low, high - low, 1.0)
    inner = size - 4 * radius
    for (px, py), label in zip(points, labels, strict=True):
        cx = x0 + 2 * radius + (px - low[0]) / span[0] * inner
        cy = y0 + 2 * radius + (1.0 - (py - low[1]) / span[1]) * inner
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour_of(label, legend), outline=_INK)
    for k, label in enumerate(legend):
        ly = y0 + 4 + 18 * k
        count = sum(1 for v in labels if v == label)
        draw.ellipse((x0 + size + 10, ly + 2, x0 + size + 20, ly + 12), fill=colour_of(label, legend), outline=_INK)
        draw.text((x0 + size + 24, ly), f"{label} ({count})", fill=_INK, font=small)
    if xlabel:
        draw.text((x0, y0 + size + 3), xlabel, fill=(90, 90, 90), font=small)
    return np.asarray(image)


def side_by_side(images: Sequence[np.ndarray], gap: int = 6) -> np.ndarray:
    """RGB images next to each other, top-aligned, on white."""
    height = max(im.shape[0] for im in images)
    width = sum(im.shape[1] for im in images) + gap * (len(images) - 1)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for im in images:
        canvas[: im.shape[0], x : x + im.shape[1]] = im
        x += im.shape[1] + gap
    return canvas


def stacked(images: Sequence[np.ndarray], gap: int = 6) -> np.ndarray:
    """RGB images above each other, left-aligned, on white."""
    width = max(im.shape[1] for im in images)
    height = sum(im.shape[0] for im in images) + gap * (len(images) - 1)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    y = 0
    for im in images:
        canvas[y : y + im.shape[0], : im.shape[1]] = im
        y += im.shape[0] + gap
    return canvas
