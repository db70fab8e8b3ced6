//! Herald's black-box integration tests live in `it/` (one test binary, one module per
//! area). This library target is empty; it exists so the folder is a workspace crate.
