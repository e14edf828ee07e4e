//! Content: the built-in content types, typed field values, and names and paths.

mod path;
mod types;
mod value;

pub use path::{
    parent_path, path_key, validate_name, validate_path, MAX_NAME_CHARS, MAX_PATH_CHARS,
};
pub use types::{ContentType, ContentTypes, FieldDef, FieldKind, Storage};
pub use value::{format_date, parse_date, BinaryValue, FieldValue};
