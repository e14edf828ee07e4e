//! Child processes that print the address they listen on (`cairn serve`,
//! `cairn search-service` print `... on http://127.0.0.1:PORT ...`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Spawns `cmd` with its standard output piped, and returns the child with the first
/// `http://...` URL it prints (up to the next whitespace), waiting at most `deadline`.
/// The rest of the output is read and dropped, so the child never blocks on a full pipe.
///
/// # Panics
///
/// When the command does not start, or prints no URL within `deadline` (the child is
/// killed first). These are test failures.
pub fn spawn_announcing(cmd: &mut Command, deadline: Duration) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let Some(stdout) = child.stdout.take() else {
        panic!("{cmd:?}: no standard output to read");
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(i) = line.find("http://") {
                let url = line[i..].split_whitespace().next().unwrap_or_default();
                let _ = tx.send(url.to_string());
            }
        }
    });
    match rx.recv_timeout(deadline) {
        Ok(url) => (child, url),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} printed no http:// address within {deadline:?}");
        }
    }
}

/// Sends SIGTERM to `child` and waits at most `deadline` for it to exit; its exit status.
///
/// # Panics
///
/// When `kill` fails or the child does not exit in time (a test failure).
pub fn terminate(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "kill -TERM {pid} failed");
    crate::wait_until("the process exits after SIGTERM", deadline, || {
        child.try_wait().ok().flatten()
    })
}
