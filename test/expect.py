"""Narrowing for results a test requires: a check that must report a problem, a value that must be there."""


def reported(problem: str | None) -> str:
    """The problem a check must report; fails the test when the check reports none."""
    assert problem is not None, "the check reported no problem where one was expected"
    return problem
