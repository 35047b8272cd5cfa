"""Reports: JSON for machines, HTML (templates/*.html.j2) for people."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import jinja2

from toolkit.models import FleetReport, RunReport

if TYPE_CHECKING:
    from toolkit.economics.engine import AdviceReport

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def preflight_json(report: FleetReport) -> str:
    return report.model_dump_json(indent=2)


def preflight_html(report: FleetReport) -> str:
    return _env().get_template("preflight.html.j2").render(report=report)


def run_html(report: RunReport) -> str:
    return _env().get_template("run.html.j2").render(report=report)


def advise_html(report: AdviceReport) -> str:
    return _env().get_template("advise.html.j2").render(report=report)
