"""Results: one Measurement per number, written as bench/RESULTS.md and bench/results.json.

Every number carries its unit, its target (if the issue sets one), whether it met it, and a
short note on how it was measured, so the table can be read without the code.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    """A bound a value must respect, e.g. Target(">=", 1.0, "x nginx")."""

    op: str
    bound: float
    suffix: str = ""

    def met(self, value: float | None) -> bool | None:
        if value is None or math.isnan(value):
            return None
        compare: dict[str, Callable[[float, float], bool]] = {
            ">=": operator.ge,
            "<=": operator.le,
            "==": operator.eq,
        }
        return compare[self.op](value, self.bound)

    def __str__(self) -> str:
        symbol = {">=": "≥", "<=": "≤", "==": "="}[self.op]
        return f"{symbol} {self.bound:g}{self.suffix}"


@dataclass
class Measurement:
    measurement: str
    contender: str
    value: float | None
    unit: str
    how: str
    target: Target | None = None

    @property
    def met(self) -> bool | None:
        return self.target.met(self.value) if self.target else None

    def shown(self) -> str:
        if self.value is None:
            return "n/a"
        if self.value.is_integer() and abs(self.value) < 1000:
            digits = 0  # counts
        else:
            digits = 2 if abs(self.value) < 10 else 1 if abs(self.value) < 1000 else 0
        number = f"{self.value:,.{digits}f}"
        return f"{number} {self.unit}".strip()

    def to_json(self) -> dict[str, Any]:
        return {
            "measurement": self.measurement,
            "contender": self.contender,
            "value": self.value,
            "unit": self.unit,
            "target": str(self.target) if self.target else None,
            "met": self.met,
            "how": self.how,
        }


@dataclass
class SectionResult:
    """What one section measured, the raw data behind it, and notes for the reader."""

    name: str
    title: str
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def add(self, *measurements: Measurement) -> None:
        self.measurements.extend(measurements)


def _met_text(met: bool | None) -> str:
    return {True: "yes", False: "**NO**", None: ""}[met]


def markdown(header: list[str], sections: list[SectionResult]) -> str:
    """RESULTS.md: environment, one table of every number, then the notes of each section."""
    lines = ["# Benchmark results", "", *header, ""]
    lines += [
        "| section | measurement | contender | value | target | met? | how |",
        "|---|---|---|---|---|---|---|",
    ]
    for section in sections:
        if section.error:
            lines.append(f"| {section.name} | FAILED | | {section.error[:120]} | | | |")
        for m in section.measurements:
            target = str(m.target) if m.target else ""
            cells = [section.name, m.measurement, m.contender, m.shown(), target]
            cells += [_met_text(m.met), m.how]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    for section in sections:
        lines += [f"## {section.name}: {section.title}", ""]
        if section.error:
            lines += ["```", section.error, "```", ""]
        lines += [f"- {note}" for note in section.notes]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def raw_json(environment: dict[str, Any], sections: list[SectionResult]) -> str:
    document = {
        "environment": environment,
        "sections": [
            {
                **{k: v for k, v in asdict(s).items() if k not in ("measurements",)},
                "measurements": [m.to_json() for m in s.measurements],
            }
            for s in sections
        ],
    }
    return json.dumps(document, indent=2, default=str) + "\n"


def write(
    folder: Path, header: list[str], environment: dict[str, Any], sections: list[SectionResult]
) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "RESULTS.md", folder / "results.json"
    md.write_text(markdown(header, sections))
    js.write_text(raw_json(environment, sections))
    return md, js
