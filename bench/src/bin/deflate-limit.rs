//! The cost of permessage-deflate's codec alone for one echoed message:
//! what a compressing echo server must at least do beyond an uncompressed
//! echo — inflate the client's message and compress the reply — timed in a
//! loop without sockets (bench/deflate/run.sh adds the uncompressed echo's
//! cost to make the limit).
//!
//! deflate-limit PAYLOAD_FILE [--no-takeover] [--count N] [--sockets S] [--gap-us G] [--level L]
//!
//! The client side (compressing each message, inflating each reply) runs
//! too, untimed, so that with context takeover the server's codec sees the
//! stream a real client sends. With context takeover each of S sockets
//! (default 1) keeps its own codecs and the messages go round them, as the
//! load's connections do: the codecs' state (about 300 KiB a socket) is
//! then mostly out of cache, as it is in a server. `--gap-us G` sleeps G µs
//! between messages (untimed), as a server that waits for its clients
//! does: a core that idles between messages runs them slower. Prints one
//! JSON line: CPU µs per message of the server's two steps, and the mean
//! size of the compressed reply, at level 6 (as the servers use; `--level`
//! for another) and 15-bit windows.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

fn compress(codec: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let start = codec.total_in();
    loop {
        out.reserve(input.len() / 2 + 1024);
        let consumed = (codec.total_in() - start) as usize;
        codec
            .compress_vec(&input[consumed..], out, FlushCompress::Sync)
            .expect("deflate");
        if (codec.total_in() - start) as usize == input.len() && out.capacity() > out.len() {
            break;
        }
    }
    out.truncate(out.len().saturating_sub(4));
}

fn inflate(codec: &mut Decompress, input: &mut Vec<u8>, out: &mut Vec<u8>, len: usize) {
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    out.clear();
    out.reserve(len + 1024);
    codec
        .decompress_vec(input, out, FlushDecompress::Sync)
        .expect("inflate");
    assert_eq!(out.len(), len);
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: deflate-limit PAYLOAD_FILE [--no-takeover] [--count N]");
        return ExitCode::from(2);
    };
    let mut no_takeover = false;
    let mut count = 20_000usize;
    let mut sockets = 1usize;
    let mut gap = Duration::ZERO;
    let mut level = 6u32;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-takeover" => no_takeover = true,
            "--count" => count = args.next().and_then(|v| v.parse().ok()).unwrap_or(count),
            "--sockets" => sockets = args.next().and_then(|v| v.parse().ok()).unwrap_or(1).max(1),
            "--level" => {
                level = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(level)
                    .min(9)
            }
            "--gap-us" => {
                gap = Duration::from_micros(args.next().and_then(|v| v.parse().ok()).unwrap_or(0));
            }
            other => {
                eprintln!("unknown argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let first = std::fs::read(&path).expect("the payload file");
    // The load changes a counter in every message (`"seq":N`, N from
    // 1,000,000 up): so does this loop.
    let text = String::from_utf8(first).expect("a JSON text");
    let tail = text
        .strip_prefix("{\"seq\":0")
        .expect("the load's payload starts with its counter")
        .to_owned();
    let message = |i: usize| format!("{{\"seq\":{}{tail}", 1_000_000 + i).into_bytes();
    let payload_len = message(0).len();
    let level = Compression::new(level);
    // Without context takeover one codec pair serves every socket (a
    // server borrows it per message from its pool).
    let pairs = if no_takeover { 1 } else { sockets };
    let mut codecs: Vec<_> = (0..pairs)
        .map(|_| {
            (
                Compress::new(level, false),
                Decompress::new(false),
                Compress::new(level, false),
                Decompress::new(false),
            )
        })
        .collect();
    let (mut wire, mut reply, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
    let mut timed = Duration::ZERO;
    let mut reply_bytes = 0usize;
    for i in 0..count {
        let (client_deflate, client_inflate, server_deflate, server_inflate) =
            &mut codecs[i % pairs];
        let payload = message(i);
        compress(client_deflate, &payload, &mut wire);
        let start = Instant::now();
        inflate(server_inflate, &mut wire, &mut scratch, payload.len());
        compress(server_deflate, &scratch, &mut reply);
        if no_takeover {
            // Without context takeover the server starts over after every
            // message: part of its cost.
            server_deflate.reset();
            server_inflate.reset(false);
        }
        timed += start.elapsed();
        reply_bytes += reply.len();
        inflate(client_inflate, &mut reply, &mut scratch, payload.len());
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        if no_takeover {
            client_deflate.reset();
            client_inflate.reset(false);
        }
    }
    println!(
        "{{\"payload_bytes\":{},\"no_takeover\":{no_takeover},\"sockets\":{pairs},\"count\":{count},\"level\":{},\"codec_us_per_msg\":{:.2},\"reply_bytes\":{}}}",
        payload_len,
        level.level(),
        timed.as_secs_f64() * 1e6 / count as f64,
        reply_bytes / count
    );
    ExitCode::SUCCESS
}
