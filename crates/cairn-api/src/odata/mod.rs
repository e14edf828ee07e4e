//! The OData service in sensenet's dialect: paths, query options, bodies, JSON shapes and
//! the handlers that tie them to the store and the index.

pub mod actions;
pub mod body;
pub mod handlers;
pub mod listing;
pub mod options;
pub mod path;
pub mod shape;
