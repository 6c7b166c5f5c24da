// The extension's build script (whether the futex queue is compiled): the
// same file for this build as for the ext crate.
include!("../ext/build.rs");
