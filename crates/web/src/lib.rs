//! casebook-web
