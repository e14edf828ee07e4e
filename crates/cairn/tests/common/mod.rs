//! What the process tests of the binary share: running `cairn` as a new user would, and
//! reading what it said.

#![allow(dead_code)]

use std::process::{Command, Output};

/// A `cairn` command with none of Cairn's settings taken from the test's environment.
pub fn cairn() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    for var in [
        "CAIRN_DATA",
        "CAIRN_DATABASE",
        "CAIRN_ADMIN_KEY",
        "CAIRN_LISTEN",
        "CAIRN_LOG",
    ] {
        c.env_remove(var);
    }
    c
}

/// Everything a command printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
