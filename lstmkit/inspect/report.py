"""A report folder: index.html with the figures and tables, the PNGs, and figures.json with the
numbers behind every figure. The page is static HTML (no scripts) that opens from disk."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Report:
    directory: Path
    title: str
    sections: list[str] = field(default_factory=list)  # HTML fragments, in order
    figures: dict[str, dict] = field(default_factory=dict)  # name -> figure data

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def heading(self, text: str) -> None:
        self.sections.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        self.sections.append(f"<p>{html.escape(text)}</p>")

    def raw(self, fragment: str) -> None:
        self.sections.append(fragment)

    def figure(self, name: str, data: dict, caption: str) -> None:
        """Register a PNG written as DIRECTORY/NAME.png and the data it shows."""
        self.figures[name] = {"file": f"{name}.png", "caption": caption, **data}
        self.sections.append(
            f'<figure><img src="{html.escape(name)}.png" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def table(self, header: list[str], rows: list[list]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
            for row in rows
        )
        self.sections.append(f"<table><tr>{head}</tr>{body}</table>")

    def write(self) -> Path:
        page = (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:980px;margin:1.5em auto;"
            "color:#222;line-height:1.45}img{max-width:100%;border:1px solid #eee}"
            "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;"
            "padding:2px 8px;text-align:right}figcaption{font-size:.85em;color:#555}"
            "code{background:#f4f4f4;padding:0 3px}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>" + "\n".join(self.sections) + "</body></html>"
        )
        index = self.directory / "index.html"
        index.write_text(page, encoding="utf-8")
        (self.directory / "figures.json").write_text(json.dumps(self.figures, indent=1))
        return index
