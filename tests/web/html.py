"""A small HTML reader for assertions about pages and pushed fragments.

    page = parse(response.content.decode())
    page.by_id("field-goal").text          # all the text inside, whitespace collapsed
    page.all(testid="queue-card")          # elements with that data-testid
    page.by_id("call-3").attrs["data-state"]

Made for the project's own templates (every element closed, void elements known); it
is not a general HTML5 parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", self.raw_text).strip()

    @property
    def raw_text(self) -> str:
        return "".join(c if isinstance(c, str) else c.raw_text for c in self.children)

    def elements(self):
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.elements()

    def all(self, *, testid: str | None = None, tag: str | None = None, **attrs: str):
        wanted = dict(attrs)
        if testid is not None:
            wanted["data-testid"] = testid
        return [
            element
            for element in self.elements()
            if (tag is None or element.tag == tag)
            and all(
                element.attrs.get(name.replace("_", "-")) == value for name, value in wanted.items()
            )
        ]

    def one(self, **criteria: str) -> Element:
        found = self.all(**criteria)
        assert len(found) == 1, f"expected one element with {criteria}, found {len(found)}"
        return found[0]

    def by_id(self, element_id: str) -> Element:
        return self.one(id=element_id)

    def has_id(self, element_id: str) -> bool:
        return bool(self.all(id=element_id))

    def top_level(self) -> list[Element]:
        return [child for child in self.children if isinstance(child, Element)]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {name: value if value is not None else "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(
            Element(tag, {name: value if value is not None else "" for name, value in attrs})
        )

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return
        raise AssertionError(f"</{tag}> closes nothing")

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(html: str | bytes) -> Element:
    builder = _Builder()
    builder.feed(html.decode() if isinstance(html, bytes) else html)
    builder.close()
    return builder.root
