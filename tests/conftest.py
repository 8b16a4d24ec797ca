import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "test_book" in item.nodeid:
            item.add_marker(pytest.mark.book)


@pytest.fixture(scope="session")
def built_book():
    """The built book (``make book``; ``make test`` builds it first)."""
    if not (HTML / "index.html").exists():
        pytest.fail("the book is not built: run `make book` (or `make test`, which builds it)")
    return HTML
