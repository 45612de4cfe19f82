"""What a control character is: the one definition used by the config checks (`sigbridge check` and
`sigbridge run` load a config through the same code), the params checker and the templates.

A control character is any character of Unicode category Cc (U+0000-U+001F, U+007F-U+009F: the C0
controls, DEL and the C1 controls, among them U+0085 NEL, which some firmware and terminals take as a
line end, and U+009B CSI, which starts a terminal escape sequence), plus the Unicode line and
paragraph separators U+2028 and U+2029. None of them ever reaches a device inside a value.

The tab (U+0009) is a control character like the others, with one exception a config has to ask for:
a serial action with ``allow_tab: true`` may hold tabs in its own template text (the literal parts and
format specs written in the config, for firmware whose protocol separates fields with tabs). A param
value never carries a tab, whatever the action says.
"""

from __future__ import annotations

import re

#: Every control character (see the module docstring).
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: The same without the tab: for the template text of a serial action with ``allow_tab: true``.
CONTROL_CHARS_BUT_TAB = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def control_chars(*, allow_tab: bool = False) -> re.Pattern[str]:
    """The pattern to search text with: every control character, or every one but the tab."""
    return CONTROL_CHARS_BUT_TAB if allow_tab else CONTROL_CHARS


def first_control(text: str, *, allow_tab: bool = False) -> str | None:
    """The first control character in ``text`` written as ``U+XXXX`` (for messages), or None."""
    found = control_chars(allow_tab=allow_tab).search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"
