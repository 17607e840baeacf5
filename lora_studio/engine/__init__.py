"""Everything that computes. No Qt import here, ever (tests/engine/test_no_qt.py checks it)."""


class UserError(ValueError):
    """The user's input is wrong. The message says what and how to fix it (CLI: exit 2)."""
