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
        // S3 is reached only where a test says so (its moto server).
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ALLOW_HTTP",
        "AWS_PROFILE",
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
