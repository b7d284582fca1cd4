//! The policy: which columns are sensitive, how they are encrypted and who may see them.
//! Pure code: no I/O except reading the policy file in the loader.

pub mod model;

pub use model::*;
