"""One look for every figure of the report: a service, a port bucket or a year has the same colour
wherever it is drawn, and IN / OUT are always separate panels with the same names."""

from __future__ import annotations

# Okabe-Ito colours: told apart by readers with colour-vision deficiencies, and in greyscale print
# by their lightness.
SERVICE_COLOURS = {"broadband": "#0072B2", "mobile": "#E69F00"}
# Figures 7 and 8: "all traffic" is the reference line the buckets are read against.
BUCKET_COLOURS = {
    "all": "#000000",
    "TCP 80/443": "#0072B2",
    "TCP >=1024": "#CC79A7",
    "UDP 443": "#009E73",
}
BUCKET_LABELS = {"all": "all traffic"}
# A year keeps its colour in every figure and every report (indexed by the year itself, not by its
# place in the figure): consecutive years differ, and a six-year span never repeats one.
YEAR_PALETTE = ("#56B4E9", "#E69F00", "#000000", "#D55E00", "#009E73", "#CC79A7")
DIRECTION_LABELS = {"out": "OUT (download)", "in": "IN (upload)"}
# The report's panels are side by side on a 1000-pixel page: one width for every figure, so their
# lettering is the same size.
FIGURE_WIDTH_IN = 9.0
DPI = 110


def year_colour(year: int) -> str:
    """The colour of a year's line (Figures 2, 3, 4, 9, 10 and 11)."""
    return YEAR_PALETTE[year % len(YEAR_PALETTE)]


def bucket_colour(bucket: str) -> str:
    """The colour of a port bucket's line (Figures 7 and 8); an unknown bucket is grey."""
    return BUCKET_COLOURS.get(bucket, "#999999")
