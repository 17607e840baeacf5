"""The error every layer raises for bad input (the full failure taxonomy is engine/errors.py)."""


class UserError(ValueError):
    """The user's input is wrong. The message says what and how to fix it (CLI: exit 2)."""
