//! The sample's command line: `--addr`, `--threads`, `--mode`,
//! `--handshake-timeout` and `--deflate`.

use std::time::Duration;

const DEFAULT_ADDR: &str = "127.0.0.1:5000";

pub(crate) const USAGE: &str = "\
usage: echo [--addr HOST:PORT] [--threads N] [--mode aspnet|message]
            [--handshake-timeout SECONDS] [--deflate]

  --addr HOST:PORT  address to listen on (default 127.0.0.1:5000)
  --threads N       tokio worker threads (default: one per CPU core)
  --mode aspnet     echo with the ASP.NET loop: 4 KiB receives, each sent
                    back as it came (default)
  --mode message    echo whole messages (recv / send)
  --handshake-timeout SECONDS
                    how long a new connection may take to send its first
                    request's headers (default 10; decimals allowed)
  --deflate         accept permessage-deflate (RFC 7692) when the client
                    offers it (off by default: see DeflateOptions)";

/// The command line.
pub(crate) struct Args {
    pub(crate) addr: String,
    pub(crate) threads: Option<usize>,
    pub(crate) mode: Mode,
    pub(crate) handshake_timeout: Duration,
    pub(crate) deflate: bool,
}

/// How `/ws` echoes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// The ASP.NET sample's loop over a 4 KiB buffer.
    AspNet,
    /// Whole messages.
    Message,
}

impl Args {
    /// `Ok(None)` for `--help`.
    pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
        let mut parsed = Args {
            addr: DEFAULT_ADDR.to_owned(),
            threads: None,
            mode: Mode::AspNet,
            handshake_timeout: super::common::HANDSHAKE_TIMEOUT,
            deflate: false,
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--addr" => {
                    parsed.addr = args
                        .next()
                        .ok_or("--addr needs a value, such as 127.0.0.1:5000")?;
                }
                "--threads" => {
                    let value = args.next().ok_or("--threads needs a value")?;
                    match value.parse() {
                        Ok(threads) if threads > 0 => parsed.threads = Some(threads),
                        _ => {
                            return Err(format!(
                                "--threads must be a positive number, not {value:?}"
                            ));
                        }
                    }
                }
                "--mode" => {
                    parsed.mode = match args.next().as_deref() {
                        Some("aspnet") => Mode::AspNet,
                        Some("message") => Mode::Message,
                        _ => return Err("--mode needs a value: aspnet or message".to_owned()),
                    };
                }
                "--handshake-timeout" => {
                    let value = args.next().ok_or("--handshake-timeout needs a value")?;
                    match value.parse::<f64>() {
                        Ok(seconds) if seconds > 0.0 && seconds.is_finite() => {
                            parsed.handshake_timeout = Duration::from_secs_f64(seconds);
                        }
                        _ => {
                            return Err(format!(
                                "--handshake-timeout must be a positive number of seconds, not {value:?}"
                            ));
                        }
                    }
                }
                "--deflate" => parsed.deflate = true,
                "-h" | "--help" => return Ok(None),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Some(parsed))
    }
}
