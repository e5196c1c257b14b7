//! Frames over a child process's pipes: a little-endian u64 length, then the body. Used by the
//! host's isolated plugin workers and by the Python bridge teacher. A length over [`MAX_FRAME`]
//! is refused before anything is allocated, so a process that writes garbage into its channel is
//! stopped and named instead of taking the host down; a call that takes longer than its timeout
//! stops the process.

use std::{
    io::{BufReader, Read, Write},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::Duration,
};

/// The largest frame read: far above any answer (a batch of logits and hidden states is a few
/// MB), far below what a garbage length would ask to allocate.
pub const MAX_FRAME: u64 = 1 << 30;

pub fn write_frame(out: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    out.write_all(&(body.len() as u64).to_le_bytes())?;
    out.write_all(body)?;
    out.flush()
}

/// The body of the next frame, `None` at the end of the stream; an error for a length over
/// [`MAX_FRAME`].
pub fn read_frame(input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 8];
    match input.read_exact(&mut length) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u64::from_le_bytes(length);
    if length > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes, more than the limit of {MAX_FRAME}: not a frame of this protocol"),
        ));
    }
    let mut body = vec![0u8; length as usize];
    input.read_exact(&mut body)?;
    Ok(Some(body))
}

/// How a process ended, in words.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(6)) => "was killed by signal 6 (SIGABRT: it aborted)".into(),
        (None, Some(9)) => "was killed by signal 9 (SIGKILL)".into(),
        (None, Some(11)) => "was killed by signal 11 (SIGSEGV: it crashed)".into(),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".into(),
    }
}

/// A child process that answers frames on its stdout to frames on its stdin; its stderr is the
/// host's.
pub struct FramedChild {
    /// What the process is, for messages ("worker process", "Python worker").
    who: &'static str,
    child: Child,
    stdin: ChildStdin,
    frames: Receiver<std::io::Result<Vec<u8>>>,
    /// Why the process can take no more calls, once it cannot.
    gone: Option<String>,
}

impl FramedChild {
    pub fn spawn(command: &mut Command, who: &'static str) -> std::io::Result<Self> {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let (sender, frames) = mpsc::channel();
        // Frames are read on their own thread, so that a call can wait with a timeout.
        std::thread::spawn(move || loop {
            let frame = read_frame(&mut stdout);
            let last = !matches!(frame, Ok(Some(_)));
            let sent = match frame {
                Ok(Some(body)) => sender.send(Ok(body)),
                Ok(None) => break,
                Err(e) => sender.send(Err(e)),
            };
            if last || sent.is_err() {
                break;
            }
        });
        Ok(Self { who, child, stdin, frames, gone: None })
    }

    /// Sends `body` and waits for the answer (see [`FramedChild::receive`]).
    pub fn call(&mut self, call: &str, body: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
        if let Some(gone) = &self.gone {
            return Err(gone.clone());
        }
        // A failed write means the process is gone: the receive below says how it ended.
        let _ = write_frame(&mut self.stdin, body);
        self.receive(call, timeout)
    }

    /// The next frame; `Err` says why there is none (named by `call`, e.g. "forward"): the
    /// process ended (with its status), sent a frame of garbage or did not answer within
    /// `timeout` (both stop it). Every later call fails the same way.
    pub fn receive(&mut self, call: &str, timeout: Duration) -> Result<Vec<u8>, String> {
        if let Some(gone) = &self.gone {
            return Err(gone.clone());
        }
        let failure = match self.frames.recv_timeout(timeout) {
            Ok(Ok(body)) => return Ok(body),
            Ok(Err(error)) => {
                self.stop();
                format!("its {} wrote {error} during {call}, and was stopped", self.who)
            }
            Err(RecvTimeoutError::Timeout) => {
                self.stop();
                format!("its {} did not answer {call} within {} s and was stopped", self.who, timeout.as_secs())
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(describe_exit).unwrap_or_else(|e| e.to_string());
                format!("its {} {status} during {call}", self.who)
            }
        };
        self.gone = Some(failure.clone());
        Err(failure)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FramedChild {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> FramedChild {
        FramedChild::spawn(Command::new("sh").args(["-c", script]), "worker process").unwrap()
    }

    #[test]
    fn frames_round_trip_and_a_garbage_length_is_refused_without_allocating_it() {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, b"hello").unwrap();
        assert_eq!(bytes, [5, 0, 0, 0, 0, 0, 0, 0, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(read_frame(&mut bytes.as_slice()).unwrap(), Some(b"hello".to_vec()));
        assert_eq!(read_frame(&mut [].as_slice()).unwrap(), None);
        let garbage = b"garbage!and more".to_vec();
        let error = read_frame(&mut garbage.as_slice()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "a frame of {} bytes, more than the limit of 1073741824: not a frame of this protocol",
                u64::from_le_bytes(*b"garbage!")
            )
        );
    }

    #[test]
    fn a_process_that_writes_garbage_ends_or_stalls_is_named_and_stopped() {
        let second = Duration::from_secs(5);
        let mut garbage = shell("printf 'garbage!and more'; sleep 30");
        let message = garbage.call("forward", b"x", second).unwrap_err();
        assert!(
            message.starts_with("its worker process wrote a frame of")
                && message.ends_with("during forward, and was stopped"),
            "{message}"
        );
        assert_eq!(garbage.call("forward", b"x", second).unwrap_err(), message, "and stays stopped");
        let mut ending = shell("exit 3");
        assert_eq!(
            ending.call("info", b"x", second).unwrap_err(),
            "its worker process exited with status 3 during info"
        );
        let mut stalling = shell("sleep 30");
        assert_eq!(
            stalling.call("forward", b"x", Duration::from_secs(1)).unwrap_err(),
            "its worker process did not answer forward within 1 s and was stopped"
        );
    }
}
