"""Small datasets and docs that the demo and the tests use, shipped inside the wheel."""
