"""Text from outside, made safe to print (salt://_utils/certsync_util.py)."""

import pytest

from harness.loader import UTILS

printable = UTILS["certsync_util.printable"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("v=spf1 -all", "v=spf1 -all"),
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),
        ("abc\u202edef", "abc\\u202edef"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("caf\u00e9", "caf\u00e9"),
    ],
)
def test_control_and_format_characters_are_shown_escaped(text, shown):
    assert printable(text) == shown


def test_lists_and_mappings_are_escaped_inside_and_other_values_kept():
    assert printable({"k\x1b": ["a\x07", 5, None]}) == {"k\\x1b": ["a\\x07", 5, None]}
