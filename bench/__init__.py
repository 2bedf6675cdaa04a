"""Benchmarks: each prints a table, none asserts (python -m bench.<name>)."""


def print_measures(rows: list[tuple[str, str]]) -> None:
    """A two-column table: measure, value."""
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value\n{'-' * width}  -----")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
