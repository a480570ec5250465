""""What the numbers say", rendered from the run: prose lines and checked claims.

A notebook's closing notes must not type numbers: they are built from the run's variables, and
each claim the notes make ("two levels beat one") is evaluated in the run and shown as holding
or not. The claims also go into the results JSON (``tables["claims"]``), where tests and the
report read them.

Example:
    >>> notes = Notes("What the numbers say")
    >>> notes.line(f"Test accuracy {0.98:.3f}.")
    >>> notes.claim("the CAM beats the centre prior", 0.52 > 0.17, "Dice 0.520 vs 0.170")
    True
    >>> print(notes.markdown())  # doctest: +NORMALIZE_WHITESPACE
    ## What the numbers say
    <BLANKLINE>
    Test accuracy 0.980.
    <BLANKLINE>
    - **holds**: the CAM beats the centre prior (Dice 0.520 vs 0.170)
    >>> notes.records()[0]["holds"]
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Claim", "Notes"]


@dataclass(frozen=True)
class Claim:
    """One statement the notes make, with whether this run supports it and the numbers behind it."""

    text: str
    holds: bool
    evidence: str = ""

    def markdown(self) -> str:
        """``- **holds**: text (evidence)`` or ``**does not hold**``."""
        verdict = "holds" if self.holds else "does not hold"
        return f"- **{verdict}**: {self.text}" + (f" ({self.evidence})" if self.evidence else "")


@dataclass
class Notes:
    """Prose lines and :class:`Claim` s, in the order added; rendered as Markdown.

    In a notebook, end a cell with ``notes.display()`` (or ``Markdown(notes.markdown())``).
    """

    title: str = "What the numbers say"
    items: list[str | Claim] = field(default_factory=list)

    def line(self, text: str) -> None:
        """Add a paragraph of prose (already formatted from the run's values)."""
        self.items.append(text)

    def claim(self, text: str, holds: bool, evidence: str = "") -> bool:
        """Add a claim, evaluated in this run; returns ``holds`` (as a plain bool)."""
        c = Claim(text, bool(holds), evidence)
        self.items.append(c)
        return c.holds

    @property
    def claims(self) -> list[Claim]:
        """The claims alone."""
        return [c for c in self.items if isinstance(c, Claim)]

    def markdown(self) -> str:
        """The notes as Markdown: the title, then paragraphs and claim bullets."""
        parts, bullets = [f"## {self.title}"], []
        for it in self.items:
            if isinstance(it, Claim):
                bullets.append(it.markdown())
                continue
            if bullets:
                parts.append("\n".join(bullets))
                bullets = []
            parts.append(it)
        if bullets:
            parts.append("\n".join(bullets))
        return "\n\n".join(parts)

    def records(self) -> list[dict]:
        """The claims as records for the results JSON: ``method`` (the text), ``holds``, ``evidence``."""
        return [{"method": c.text, "holds": c.holds, "evidence": c.evidence} for c in self.claims]

    def display(self):
        """Show the notes in Jupyter (an ``IPython.display.Markdown``), as a cell's last value."""
        from IPython.display import Markdown

        return Markdown(self.markdown())
