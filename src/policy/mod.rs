//! The policy: which columns are sensitive, how they are encrypted and who may see them.
//!
//! Pure code: the only I/O is reading the policy file in [`Policy::load`]. A loaded
//! [`Policy`] is immutable; a reload builds a new generation. This module never
//! sees keys or column values, except the plaintext handed to [`apply_mask`].

pub mod builtins;
pub mod error;
pub mod ident;
mod loader;
pub mod mask;
pub mod model;
mod raw;
mod validate;

pub use error::{PolicyError, PolicyErrorKind, PolicyErrors};
pub use ident::{normalize_identifier, quote_identifier};
pub use mask::apply_mask;
pub use model::*;
pub use validate::DEFAULT_SCHEMA;
