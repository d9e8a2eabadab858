//! End-to-end suite of container-factory; the tests live in `tests/e2e`.
