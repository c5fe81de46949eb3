//! Integration tests for muster (see `tests/` files).
